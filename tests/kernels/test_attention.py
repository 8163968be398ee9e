"""Paged attention: the torch reference and the Triton kernel against a naive dense oracle, on random data with
random (shuffled) block tables and mixed batches of decode, verify and prefill rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from structgen.kernels.attention import (
    SHORT_ROW_MAX_QUERY,
    paged_attention,
    paged_attention_dense_naive,
    plan_attention,
)
from structgen.kernels.dispatch import triton_available

BLOCK = 4
HKV, GROUP, D = 2, 3, 16


def _case(query_lens, context_lens, seed=0, dtype=torch.float32, device="cpu", num_blocks=None):
    g = torch.Generator().manual_seed(seed)
    need = [-(-(q + c) // BLOCK) for q, c in zip(query_lens, context_lens)]
    num_blocks = num_blocks or sum(need) + 5
    perm = torch.randperm(num_blocks, generator=g).tolist()  # scattered, non-monotonic blocks
    tables, at = [], 0
    for n in need:
        tables.append(perm[at: at + n])
        at += n
    width = max(need) + 2
    bt = torch.full((len(need), width), -1, dtype=torch.int32)
    for i, t in enumerate(tables):
        bt[i, : len(t)] = torch.tensor(t, dtype=torch.int32)
    k_cache = torch.randn(num_blocks * BLOCK, HKV, D, generator=g).to(device, dtype)
    v_cache = torch.randn(num_blocks * BLOCK, HKV, D, generator=g).to(device, dtype)
    q = torch.randn(sum(query_lens), HKV * GROUP, D, generator=g).to(device, dtype)
    return q, k_cache, v_cache, bt.to(device)


MIXED = [
    ([1], [0]),  # a single first-token decode
    ([1, 1, 1], [7, 0, 13]),  # decode rows of different lengths
    ([5], [0]),  # one short prefill (no context)
    ([40], [9]),  # a long prefill chunk with context: its own group
    ([1, 4, 1, 37, 3, 1], [10, 6, 0, 5, 0, 21]),  # decode + verify + long chunk + short prefill, interleaved
    ([SHORT_ROW_MAX_QUERY, SHORT_ROW_MAX_QUERY + 1], [3, 2]),  # both sides of the grouping threshold
]


@pytest.mark.parametrize("query_lens,context_lens", MIXED)
def test_reference_matches_naive_dense(query_lens, context_lens):
    q, kc, vc, bt = _case(query_lens, context_lens, seed=len(query_lens))
    scale = D ** -0.5
    plan = plan_attention(query_lens, context_lens, bt, BLOCK, GROUP, torch.float32)
    got = paged_attention(q, kc, vc, plan, scale, backend="torch")
    want = paged_attention_dense_naive(q, kc, vc, query_lens, context_lens, bt, BLOCK, scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _shared_case(query_lens, context_lens, shared_blocks, seed=0):
    """Like _case, but every table starts with the same `shared_blocks` block ids (a radix-cached instruction)."""
    q, kc, vc, bt = _case(query_lens, context_lens, seed=seed, num_blocks=None)
    extra = torch.arange(shared_blocks, dtype=torch.int32) + int(bt.max()) + 1  # fresh blocks for the prefix
    num_blocks = int(extra.max()) + 1
    g = torch.Generator().manual_seed(seed + 100)
    kc = torch.cat([kc, torch.randn(num_blocks * BLOCK - kc.shape[0], HKV, D, generator=g)])
    vc = torch.cat([vc, torch.randn(num_blocks * BLOCK - vc.shape[0], HKV, D, generator=g)])
    bt = bt.clone()
    bt[:, :shared_blocks] = extra
    return q, kc, vc, bt


SHARED = [
    ([1, 1, 1], [13, 9, 21], 2),  # decode rows: 2 blocks shared, the shortest context holds exactly 2 full blocks
    ([1, 3, 4, 1], [17, 12, 20, 16], 3),  # decode + verify rows share 3 blocks
    ([1, 1], [6, 30], 4),  # the tables share 4 blocks, but one row has cached only 1 of them: 1 block goes
    ([1, 1, 2, 2, 40], [12, 9, 8, 11, 16], 2),  # decode and verify groups split; the long chunk is alone: no split
]


@pytest.mark.parametrize("query_lens,context_lens,shared_blocks", SHARED)
@pytest.mark.parametrize("flash", [True, False])
def test_shared_prefix_is_attended_once_and_matches_naive(monkeypatch, query_lens, context_lens, shared_blocks,
                                                          flash):
    import structgen.kernels.attention as attention

    monkeypatch.setattr(attention, "CASCADE_MIN_TOKENS", BLOCK)
    if not flash:  # the log-sum-exp fallback used where the CPU flash op is missing
        monkeypatch.setattr(attention, "_FLASH_CPU", None)
    q, kc, vc, bt = _shared_case(query_lens, context_lens, shared_blocks, seed=len(query_lens))
    plan = plan_attention(query_lens, context_lens, bt, BLOCK, GROUP, torch.float32)
    expect_tokens = min(shared_blocks, min(c for c, ql in zip(context_lens, query_lens)
                                           if ql <= SHORT_ROW_MAX_QUERY) // BLOCK) * BLOCK
    batched = [g for g in plan.groups if g.token_rows.shape[0] > 1]
    assert batched and all(g.prefix_slots.numel() == expect_tokens for g in batched)
    assert all(g.prefix_slots is None for g in plan.groups if g.token_rows.shape[0] == 1)
    scale = D ** -0.5
    got = paged_attention(q, kc, vc, plan, scale, backend="torch")
    want = paged_attention_dense_naive(q, kc, vc, query_lens, context_lens, bt, BLOCK, scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_short_shared_prefix_is_not_split():
    query_lens, context_lens = [1, 1], [9, 9]
    q, kc, vc, bt = _shared_case(query_lens, context_lens, 2)
    plan = plan_attention(query_lens, context_lens, bt, BLOCK, GROUP, torch.float32)  # 8 shared tokens < 64
    assert plan.groups[0].prefix_slots is None


def test_reference_is_causal_and_ignores_other_sequences():
    # Changing K/V of positions a token must not see (later new tokens, other sequences) leaves its output alone.
    query_lens, context_lens = [3, 2], [4, 5]
    q, kc, vc, bt = _case(query_lens, context_lens, seed=3)
    plan = plan_attention(query_lens, context_lens, bt, BLOCK, GROUP, torch.float32)
    before = paged_attention(q, kc, vc, plan, 0.25)
    # the last new token of sequence 0 is at position 6: block bt[0, 1], offset 2
    slot = int(bt[0, 6 // BLOCK]) * BLOCK + 6 % BLOCK
    kc2, vc2 = kc.clone(), vc.clone()
    kc2[slot] += 5.0
    vc2[slot] += 5.0
    after = paged_attention(q, kc2, vc2, plan, 0.25)
    torch.testing.assert_close(after[:2], before[:2])  # tokens 0,1 of seq 0 cannot see position 6
    torch.testing.assert_close(after[3:], before[3:])  # sequence 1 never sees sequence 0's blocks
    assert not torch.allclose(after[2], before[2])  # token 2 of seq 0 does see it


def test_unknown_backend_is_a_value_error():
    q, kc, vc, bt = _case([1], [2])
    plan = plan_attention([1], [2], bt, BLOCK, GROUP, torch.float32)
    with pytest.raises(ValueError, match="backend"):
        paged_attention(q, kc, vc, plan, 1.0, backend="flash9")


needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


_INTERPRETER_CHECK = """
import torch
from tests.kernels.test_attention import MIXED, _case, BLOCK, GROUP, D
from structgen.kernels.attention import paged_attention, paged_attention_dense_naive, plan_attention
for query_lens, context_lens in MIXED[:5]:
    q, kc, vc, bt = _case(query_lens, context_lens, seed=11)
    plan = plan_attention(query_lens, context_lens, bt, BLOCK, GROUP, torch.float32)
    got = paged_attention(q, kc, vc, plan, D ** -0.5, backend="triton")
    want = paged_attention_dense_naive(q, kc, vc, query_lens, context_lens, bt, BLOCK, D ** -0.5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    print("ok", query_lens, context_lens)
"""


@needs_triton
def test_triton_kernel_matches_naive_in_interpreter():
    # TRITON_INTERPRET=1 runs the kernel's source on CPU tensors. It must be set before triton is first imported,
    # hence a fresh interpreter (setting it for this whole process would make CUDA runs interpret too).
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(repo)}
    r = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok") == 5


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernel_matches_reference_on_cuda(dtype):
    query_lens, context_lens = [1, 4, 1, 37, 3, 1, 200], [10, 6, 0, 5, 0, 300, 0]
    q, kc, vc, bt = _case(query_lens, context_lens, seed=5, dtype=dtype, device="cuda")
    plan = plan_attention(query_lens, context_lens, bt, BLOCK, GROUP, dtype)
    got = paged_attention(q, kc, vc, plan, D ** -0.5, backend="triton").float()
    want = paged_attention(q.float(), kc.float(), vc.float(),
                           plan_attention(query_lens, context_lens, bt, BLOCK, GROUP, torch.float32),
                           D ** -0.5, backend="torch")
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3  # tl.dot uses TF32 for fp32 inputs
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
