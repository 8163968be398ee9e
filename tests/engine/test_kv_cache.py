"""KVCache: sizing from a byte budget, flat slot views that alias the pool, and clear errors."""

from __future__ import annotations

import pytest
import torch

from structgen.engine.kv_cache import KVCache
from structgen.engine.model_config import ModelConfig

CFG = ModelConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_layers=3, num_heads=8, num_kv_heads=2,
                  head_dim=8)


def test_from_budget_fits_whole_blocks():
    per_block = KVCache.bytes_per_block(CFG, 16, torch.float32)
    assert per_block == 2 * 3 * 16 * 2 * 8 * 4
    kv = KVCache.from_budget(CFG, per_block * 10 + per_block // 2, 16, "cpu", torch.float32)
    assert kv.num_blocks == 10 and kv.k.shape == (3, 10, 16, 2, 8) and kv.v.shape == kv.k.shape
    assert kv.num_slots == 160 and kv.dtype == torch.float32
    half = KVCache.from_budget(CFG, per_block * 10, 16, "cpu", torch.bfloat16)
    assert half.num_blocks == 20  # half the bytes per element, twice the blocks


def test_flat_views_alias_the_pool():
    kv = KVCache.from_budget(CFG, KVCache.bytes_per_block(CFG, 4, torch.float32) * 5, 4, "cpu", torch.float32)
    kv.flat_k(1)[4 * 3 + 2] = 7.0  # block 3, offset 2 of layer 1
    assert (kv.k[1, 3, 2] == 7.0).all() and kv.k.sum() == 7.0 * 2 * 8
    kv.flat_v(2)[0, 1] = 1.0
    assert kv.v[2, 0, 0, 1].sum() == 8


@pytest.mark.parametrize("budget,block", [(10, 16), (0, 16), (10**6, 0)])
def test_budget_too_small_or_bad_arguments(budget, block):
    with pytest.raises(ValueError):
        KVCache.from_budget(CFG, budget, block, "cpu", torch.float32)


def test_mismatched_tensors_are_rejected():
    with pytest.raises(ValueError, match="same 5-d shape"):
        KVCache(k=torch.zeros(1, 2, 4, 2, 8), v=torch.zeros(1, 3, 4, 2, 8), block_size=4)
    with pytest.raises(ValueError, match="block_size"):
        KVCache(k=torch.zeros(1, 2, 4, 2, 8), v=torch.zeros(1, 2, 4, 2, 8), block_size=8)
