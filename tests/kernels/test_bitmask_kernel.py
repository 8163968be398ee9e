"""The bitmask kernel: reference vs the fsm's packing contract, Triton vs reference, and a statistical check that
masking keeps the model's conditional distribution."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from structgen.fsm import bitmask as contract
from structgen.kernels.bitmask import apply_token_bitmask_reference, unpack_bitmask
from structgen.kernels.dispatch import apply_token_bitmask_, triton_available
from structgen.kernels.sampling import SamplingBatch, sample

from sampling_stats import chi_square_z  # tests/kernels/sampling_stats.py (pytest puts this folder on sys.path)


def _random_rows(rows: int, vocab: int, seed: int) -> tuple[list[np.ndarray], torch.Tensor]:
    rng = np.random.default_rng(seed)
    allowed = [np.flatnonzero(rng.random(vocab) < frac) for frac in np.linspace(0.0, 1.0, rows)]
    # word edges and the sign bit of a word
    allowed[0] = np.array(sorted({i for i in (0, 31, 32, 63, vocab - 1) if i < vocab}))
    mask = torch.from_numpy(np.stack([contract.pack(a, vocab) for a in allowed]))
    return allowed, mask


@pytest.mark.parametrize("vocab", [32, 33, 1000, 49152])
def test_reference_masks_exactly_the_packed_tokens(vocab):
    allowed, mask = _random_rows(6, vocab, seed=vocab)
    logits = torch.randn(6, vocab)
    out = apply_token_bitmask_reference(logits.clone(), mask)
    for i, a in enumerate(allowed):
        finite = torch.isfinite(out[i]).nonzero().view(-1).numpy()
        np.testing.assert_array_equal(finite, np.sort(a))
        torch.testing.assert_close(out[i, a], logits[i, a])  # allowed logits untouched
    assert torch.isneginf(out[~torch.isfinite(out)]).all()


def test_columns_beyond_the_mask_are_masked():
    # a model vocabulary padded past the tokenizer's: columns past 32*W are never real tokens
    mask = torch.from_numpy(np.stack([contract.pack(range(40), 40)]))  # W = 2 covers 64 ids
    logits = apply_token_bitmask_(torch.zeros(1, 100), mask)
    assert torch.isfinite(logits[0, :40]).all() and torch.isneginf(logits[0, 40:]).all()
    assert unpack_bitmask(mask, 100).sum() == 40


def test_bad_arguments_are_clear_errors():
    with pytest.raises(TypeError, match="int32"):
        apply_token_bitmask_(torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="rows"):
        apply_token_bitmask_(torch.zeros(2, 64), torch.zeros(3, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        apply_token_bitmask_(torch.zeros(64), torch.zeros(1, 2, dtype=torch.int32))


def test_masking_keeps_the_conditional_distribution():
    # Sample many times from a tiny vocabulary under a mask: the frequencies must follow the model's distribution
    # restricted to the allowed set and renormalised (and never leave it).
    vocab = 12
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(vocab, generator=g) * 1.5
    allowed = [1, 2, 5, 7, 8, 11]
    mask = torch.from_numpy(contract.pack(allowed, vocab)).view(1, -1)
    n = 6000
    batch = logits.expand(n, vocab).clone()
    mask_rows = mask.expand(n, -1).contiguous()
    apply_token_bitmask_(batch, mask_rows)
    params = SamplingBatch.from_lists([1.0] * n, [0] * n, [1.0] * n, list(range(n)), [0] * n)
    toks = sample(batch, params)
    assert set(toks.tolist()) <= set(allowed)
    counts = torch.bincount(toks, minlength=vocab)[allowed]
    expected = torch.softmax(logits[allowed], dim=0)
    assert chi_square_z(counts, expected) < 3.7
    # the check has power: a uniform choice among the allowed tokens is rejected
    assert chi_square_z(counts, torch.ones(len(allowed))) > 3.7


_INTERPRETER_CHECK = """
import numpy as np, torch
from structgen.fsm import bitmask as contract
from structgen.kernels.bitmask import apply_token_bitmask_reference, apply_token_bitmask_triton
from tests.kernels.test_bitmask_kernel import _random_rows
for vocab, block in [(33, 16), (1000, 128), (5000, 1024)]:
    _, mask = _random_rows(5, vocab, seed=vocab)
    logits = torch.randn(5, vocab)
    want = apply_token_bitmask_reference(logits.clone(), mask)
    got = apply_token_bitmask_triton(logits.clone(), mask, block=block)
    assert torch.equal(got, want), vocab
    print("ok", vocab)
"""


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_kernel_matches_reference_in_interpreter():
    # TRITON_INTERPRET must be set before triton is first imported: a fresh interpreter (see test_attention.py).
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(repo), str(repo / "tests" / "kernels")])
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    r = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok") == 3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernel_matches_reference_on_cuda(dtype):
    from structgen.kernels.bitmask import apply_token_bitmask_triton

    _, mask = _random_rows(32, 49152, seed=1)
    logits = torch.randn(32, 49152).to("cuda", dtype)
    mask = mask.to("cuda")
    want = apply_token_bitmask_reference(logits.clone(), mask)
    got = apply_token_bitmask_triton(logits.clone(), mask)
    assert torch.equal(got, want)
