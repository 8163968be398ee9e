"""ForwardBatch and its builder: flattening, positions, KV slots through block tables, logits rows, errors."""

from __future__ import annotations

import pytest
import torch

from structgen.engine.forward_batch import ForwardBatch, build_forward_batch


def test_builder_flattens_a_mixed_batch():
    # decode row (ctx 5), prefill chunk of 3 (ctx 0), verify row of 2 (ctx 7) with logits at both
    fb = build_forward_batch([[11], [21, 22, 23], [31, 32]], [5, 0, 7], [[4, 9], [2], [6, 1, 3]], block_size=4,
                             num_logits=[1, 1, 2])
    assert fb.input_ids.tolist() == [11, 21, 22, 23, 31, 32]
    assert fb.positions.tolist() == [5, 0, 1, 2, 7, 8]
    # position 5 -> block 9 offset 1; positions 0..2 -> block 2; 7 -> block 1 offset 3; 8 -> block 3 offset 0
    assert fb.slot_mapping.tolist() == [9 * 4 + 1, 8, 9, 10, 1 * 4 + 3, 3 * 4]
    assert fb.logits_indices.tolist() == [0, 3, 4, 5]
    assert fb.query_lens == [1, 3, 2] and fb.context_lens == [5, 0, 7]
    assert fb.block_tables.dtype == torch.int32 and fb.block_tables.tolist() == [[4, 9, -1], [2, -1, -1], [6, 1, 3]]
    assert not fb.is_decode_only and fb.num_seqs == 3 and fb.num_tokens == 6


def test_prefill_chunk_without_logits():
    fb = build_forward_batch([[1, 2, 3], [4]], [0, 2], [[0], [1]], block_size=4, num_logits=[0, 1])
    assert fb.logits_indices.tolist() == [3]


@pytest.mark.parametrize("kwargs,match", [
    (dict(new_token_ids=[[1, 2, 3, 4, 5]], context_lens=[0], block_tables=[[0]]), "needs 2"),
    (dict(new_token_ids=[[]], context_lens=[0], block_tables=[[0]]), "at least one"),
    (dict(new_token_ids=[[1]], context_lens=[0, 1], block_tables=[[0]]), "equal length"),
    (dict(new_token_ids=[[1]], context_lens=[0], block_tables=[[0]], num_logits=[2]), "num_logits"),
    (dict(new_token_ids=[[1]], context_lens=[4], block_tables=[[0, -1]]), "valid"),
])
def test_builder_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_forward_batch(block_size=4, **kwargs)


def test_dataclass_checks_consistency():
    with pytest.raises(ValueError, match="sum of query_lens"):
        ForwardBatch(input_ids=torch.zeros(3, dtype=torch.long), positions=torch.zeros(3, dtype=torch.long),
                     query_lens=[2], context_lens=[0], block_tables=torch.zeros(1, 1, dtype=torch.int32),
                     slot_mapping=torch.zeros(3, dtype=torch.long), logits_indices=torch.zeros(1, dtype=torch.long))
