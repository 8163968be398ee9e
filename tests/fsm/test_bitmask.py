"""The bitmask contract: int32 (rows, ceil(V/32)), bit i%32 of word i//32, LSB first, padding zero."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from structgen.fsm import bitmask


def reference_bits(row: np.ndarray, vocab_size: int) -> np.ndarray:
    """Plain-torch reading of the contract: (V,) bool, token i allowed iff (word[i // 32] >> (i % 32)) & 1."""
    words = torch.from_numpy(np.asarray(row, dtype=np.int32)).to(torch.int64)  # (W,)
    shifts = torch.arange(32, dtype=torch.int64)  # (32,)
    bits = ((words[:, None] >> shifts[None, :]) & 1).flatten()  # (W * 32,)
    return bits.numpy().astype(bool)


def test_num_words_covers_the_vocabulary():
    assert bitmask.num_words(1) == 1
    assert bitmask.num_words(32) == 1
    assert bitmask.num_words(33) == 2
    assert bitmask.num_words(49152) == 1536
    with pytest.raises(ValueError):
        bitmask.num_words(0)


def test_allocate_is_zero_int32():
    m = bitmask.allocate(3, 70)
    assert m.shape == (3, 3) and m.dtype == np.int32 and not m.any()
    with pytest.raises(ValueError):
        bitmask.allocate(-1, 70)


def test_bit_order_is_lsb_first():
    assert bitmask.pack([0], 64).tolist() == [1, 0]
    assert bitmask.pack([1], 64).tolist() == [2, 0]
    assert bitmask.pack([31], 64).tolist() == [-(2**31), 0]  # the sign bit of word 0
    assert bitmask.pack([32], 64).tolist() == [0, 1]
    assert bitmask.pack([33, 63], 64).tolist() == [0, 2 | -(2**31)]


def test_padding_bits_stay_zero():
    row = bitmask.pack(range(33), 33)
    assert row.tolist() == [-1, 1]  # ids 33..63 are padding


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300).flatmap(lambda v: st.tuples(st.just(v), st.sets(st.integers(0, v - 1)))))
def test_pack_unpack_roundtrip_matches_reference(case):
    vocab_size, ids = case
    row = bitmask.pack(sorted(ids), vocab_size)
    assert row.dtype == np.int32 and row.shape == (bitmask.num_words(vocab_size),)
    assert bitmask.unpack(row).tolist() == sorted(ids)
    ref = reference_bits(row, vocab_size)
    assert np.flatnonzero(ref).tolist() == sorted(ids)
    assert bitmask.count_allowed(row) == len(ids)
    for i in range(vocab_size):
        assert bitmask.is_allowed(row, i) == (i in ids)


def test_pack_rejects_out_of_range_ids():
    with pytest.raises(ValueError):
        bitmask.pack([40], 40)
    with pytest.raises(ValueError):
        bitmask.pack([-1], 40)


def test_unpack_rejects_2d():
    with pytest.raises(ValueError):
        bitmask.unpack(np.zeros((2, 2), dtype=np.int32))


def test_copy_row_into_numpy_and_torch_rows():
    src = bitmask.pack([0, 5, 40, 99], 100)
    dst = bitmask.allocate(2, 100)
    bitmask.copy_row(dst[1], src)
    assert dst[1].tolist() == src.tolist() and not dst[0].any()
    t = torch.zeros((2, 4), dtype=torch.int32)
    bitmask.copy_row(t[0], src)
    assert t[0].tolist() == src.tolist() and not t[1].any()


def test_copy_row_rejects_wrong_dtype_shape_and_type():
    src = bitmask.pack([1], 100)
    with pytest.raises(TypeError):
        bitmask.copy_row(np.zeros(4, dtype=np.int64), src)
    with pytest.raises(ValueError):
        bitmask.copy_row(np.zeros(5, dtype=np.int32), src)
    with pytest.raises(TypeError):
        bitmask.copy_row(torch.zeros(4, dtype=torch.float32), src)
    with pytest.raises(ValueError):
        bitmask.copy_row(torch.zeros(3, dtype=torch.int32), src)
    with pytest.raises(TypeError):
        bitmask.copy_row([0, 0, 0, 0], src)
