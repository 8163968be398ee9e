"""The native CPU paged attention (structgen/kernels/cpu_paged_attention.c, backend "native") against the naive
dense oracle: mixed batches, GQA group sizes that change the run length, head sizes that take each code path,
block sizes that are not a multiple of 8, verify rows longer than one run, and what the kernel must not see."""

from __future__ import annotations

import pytest
import torch

from structgen.kernels import cpu_attention, native
from structgen.kernels.attention import (
    SHORT_ROW_MAX_QUERY,
    paged_attention,
    paged_attention_dense_naive,
    plan_attention,
)
from structgen.kernels.dispatch import backends_for

pytestmark = pytest.mark.skipif(not native.available(),
                                reason=f"native CPU kernels unavailable: {native.unavailable_reason()}")


def _case(query_lens, context_lens, hkv, group, d, block, seed=0, shared_blocks=0):
    """Random q/K/V and shuffled block tables; the first `shared_blocks` blocks of every table are the same."""
    g = torch.Generator().manual_seed(seed)
    need = [-(-(q + c) // block) for q, c in zip(query_lens, context_lens)]
    own = [n - shared_blocks for n in need]
    num_blocks = shared_blocks + sum(own) + 3
    perm = torch.randperm(num_blocks, generator=g).tolist()
    shared, at = perm[:shared_blocks], shared_blocks
    bt = torch.full((len(need), max(need) + 2), -1, dtype=torch.int32)
    for i, n in enumerate(own):
        bt[i, : shared_blocks + n] = torch.tensor(shared + perm[at: at + n], dtype=torch.int32)
        at += n
    kc = torch.randn(num_blocks * block, hkv, d, generator=g)
    vc = torch.randn(num_blocks * block, hkv, d, generator=g)
    q = torch.randn(sum(query_lens), hkv * group, d, generator=g) * 2  # sharper softmax: errors show
    return q, kc, vc, bt


CASES = [
    ([1], [0]),  # the very first decode: one visible position
    ([1, 1, 1], [7, 0, 30]),  # decode rows of different lengths
    ([4, 1, 9], [12, 3, 20]),  # verify rows; 9 spans several runs at every group size here
    ([1, 40, 3], [5, 9, 0]),  # a long prefill chunk (torch group) between native rows
    ([SHORT_ROW_MAX_QUERY, SHORT_ROW_MAX_QUERY + 1], [3, 2]),  # both sides of the threshold
]


@pytest.mark.parametrize("query_lens,context_lens", CASES)
@pytest.mark.parametrize("hkv,group,d,block", [(2, 3, 16, 4), (1, 1, 8, 5), (2, 4, 64, 16), (1, 8, 128, 12),
                                               (3, 3, 64, 16), (1, 16, 24, 8)])
def test_matches_naive_dense(query_lens, context_lens, hkv, group, d, block):
    q, kc, vc, bt = _case(query_lens, context_lens, hkv, group, d, block, seed=len(query_lens) + d)
    scale = d ** -0.5
    plan = plan_attention(query_lens, context_lens, bt, block, group, torch.float32, native_short_rows=True)
    native_rows = sum(q_ for q_ in query_lens if q_ <= SHORT_ROW_MAX_QUERY)
    assert int(plan.native_runs[:, 1].sum()) == native_rows  # every short row went native, and only those
    assert int(plan.native_runs[:, 1].max()) <= cpu_attention.run_length(group)
    got = paged_attention(q, kc, vc, plan, scale, backend="native")
    want = paged_attention_dense_naive(q, kc, vc, query_lens, context_lens, bt, block, scale)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_rows_sharing_an_instruction_match_naive():
    query_lens, context_lens = [1, 3, 1, 2], [70, 66, 90, 65]
    q, kc, vc, bt = _case(query_lens, context_lens, 3, 3, 64, 16, seed=4, shared_blocks=4)
    plan = plan_attention(query_lens, context_lens, bt, 16, 3, torch.float32, native_short_rows=True)
    got = paged_attention(q, kc, vc, plan, 0.125, backend="native")
    want = paged_attention_dense_naive(q, kc, vc, query_lens, context_lens, bt, 16, 0.125)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_is_causal_within_a_run_and_ignores_other_sequences():
    # a verify run of 4 tokens is one task: token j must still not see the K/V of tokens j+1.. of its own run
    query_lens, context_lens = [4, 2], [6, 5]
    q, kc, vc, bt = _case(query_lens, context_lens, 1, 2, 16, 4, seed=3)
    plan = plan_attention(query_lens, context_lens, bt, 4, 2, torch.float32, native_short_rows=True)
    assert plan.native_runs.tolist()[0] == [0, 4]
    before = paged_attention(q, kc, vc, plan, 0.25, backend="native")
    pos = 6 + 2  # the third new token of sequence 0
    slot = int(bt[0, pos // 4]) * 4 + pos % 4
    kc2, vc2 = kc.clone(), vc.clone()
    kc2[slot] += 5.0
    vc2[slot] += 5.0
    after = paged_attention(q, kc2, vc2, plan, 0.25, backend="native")
    torch.testing.assert_close(after[:2], before[:2])  # tokens 0, 1 cannot see position 8
    assert not torch.allclose(after[2], before[2]) and not torch.allclose(after[3], before[3])
    torch.testing.assert_close(after[4:], before[4:])  # sequence 1 never reads sequence 0's blocks


def test_large_scores_stay_finite():
    # online softmax across blocks with scores in the thousands: no overflow, no NaN
    q, kc, vc, bt = _case([1, 2], [40, 33], 1, 3, 16, 4, seed=8)
    q = q * 300
    plan = plan_attention([1, 2], [40, 33], bt, 4, 3, torch.float32, native_short_rows=True)
    got = paged_attention(q, kc, vc, plan, 0.25, backend="native")
    want = paged_attention_dense_naive(q.double(), kc.double(), vc.double(), [1, 2], [40, 33], bt, 4, 0.25)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


def test_is_the_cpu_default_and_declines_other_dtypes():
    assert backends_for(torch.device("cpu")).attention == "native"
    assert cpu_attention.supports(9, 3, 64, 16, torch.float32)
    assert not cpu_attention.supports(9, 3, 64, 16, torch.bfloat16)
    assert not cpu_attention.supports(9, 3, 60, 16, torch.float32)  # head_dim not a multiple of 8
    assert not cpu_attention.supports(32, 1, 64, 16, torch.float32)  # 32 query heads per KV head
    assert not cpu_attention.supports(9, 3, 64, 128, torch.float32)  # block larger than the kernel's buffers


def test_refuses_runs_that_would_read_out_of_bounds():
    q, kc, vc, bt = _case([3], [2], 1, 8, 16, 4)
    plan = plan_attention([3], [2], bt, 4, 8, torch.float32)
    out = torch.empty_like(q)
    too_long = torch.tensor([[0, 3]])  # group 8: at most 2 tokens per run
    with pytest.raises(ValueError, match="run"):
        cpu_attention.paged_attention_rows(q, kc, vc, too_long, plan.token_seq, plan.token_kv_len,
                                           plan.block_tables, 4, 0.25, out)
    past_q = torch.tensor([[2, 2]])
    with pytest.raises(ValueError, match="run"):
        cpu_attention.paged_attention_rows(q, kc, vc, past_q, plan.token_seq, plan.token_kv_len,
                                           plan.block_tables, 4, 0.25, out)
    # a check done for another shape (here: group 4, where 3 tokens fit a run) does not vouch for this one
    with pytest.raises(ValueError, match="run"):
        cpu_attention.paged_attention_rows(q, kc, vc, too_long, plan.token_seq, plan.token_kv_len,
                                           plan.block_tables, 4, 0.25, out, runs_checked_for=(3, 4))
