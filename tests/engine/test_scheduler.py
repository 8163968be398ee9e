"""Scheduler logic with no model: a fake step appends one token per sequence that reaches its end."""

from concurrent.futures import Future

import pytest

from structgen.engine.block_manager import BlockManager
from structgen.engine.radix_cache import RadixCache
from structgen.engine.requests import GenerateRequest, SamplingParams
from structgen.engine.scheduler import RequestTooLargeError, Scheduler
from structgen.engine.sequence import Sequence, SequenceStatus

BS = 4


def make(num_blocks=64, cache=True, max_num_seqs=8, budget=32, max_model_len=512):
    bm = BlockManager(num_blocks, BS)
    rc = RadixCache(BS, bm) if cache else None
    return Scheduler(bm, rc, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=max_model_len)


def seq(rid, prompt, max_tokens=4):
    return Sequence(GenerateRequest(rid, list(prompt), SamplingParams(max_tokens=max_tokens)))


def fake_step(s: Scheduler, finished: list | None = None):
    """One step: commit every chunk; each sequence whose chunk reached its end 'samples' token 7."""
    out = s.schedule()
    assert out.num_batched_tokens <= s.max_num_batched_tokens
    assert len(out.scheduled) <= s.max_num_seqs
    for sc in out.scheduled:
        q = sc.seq
        # The block table always covers the tokens this step writes.
        assert len(q.block_table) * BS >= sc.context_len + sc.num_new_tokens
        s.commit(sc)
        if sc.num_logits:
            q.append_tokens([7])
            if q.num_output_tokens >= q.sampling.max_tokens:
                s.finish(q, "length")
                if finished is not None:
                    finished.append(q)
    return out


def run_all(s, limit=500):
    finished = []
    for _ in range(limit):
        if not s.has_work:
            break
        fake_step(s, finished)
    return finished


def test_requests_join_and_leave_every_step():
    s = make()
    a = seq("a", range(1, 6), max_tokens=2)
    s.add(a)
    fake_step(s)
    b = seq("b", range(10, 13), max_tokens=5)
    s.add(b)
    out = fake_step(s)
    assert {x.seq.request_id for x in out.scheduled} == {"a", "b"}  # b joined a's decode step
    assert a.is_finished and a.finish_reason == "length"
    out = fake_step(s)
    assert [x.seq.request_id for x in out.scheduled] == ["b"]          # a left
    run_all(s)
    assert b.is_finished and b.output_token_ids == [7] * 5


def test_long_prompt_is_chunked_and_decodes_keep_running():
    s = make(budget=16)
    a = seq("a", range(1, 4), max_tokens=20)
    s.add(a)
    fake_step(s)
    long = seq("long", range(100, 150), max_tokens=2)   # 50 tokens, budget 16 per step
    s.add(long)
    chunks = []
    while long.num_output_tokens == 0:
        before = a.num_output_tokens
        out = fake_step(s)
        chunks += [x.num_new_tokens for x in out.scheduled if x.seq is long]
        assert a.num_output_tokens == before + 1       # the decode was never stalled
        assert all(x.num_logits == 0 for x in out.scheduled if x.seq is long and long.num_output_tokens == 0)
    assert sum(chunks) == 50 and max(chunks) <= 15


def test_shared_prefix_is_prefilled_once():
    s = make(budget=256)
    prefix = list(range(1000, 1030))                    # 30 tokens: 7 full pages
    first = seq("first", prefix + [1, 2, 3])
    s.add(first)
    run_all(s)
    second = seq("second", prefix + [4, 5, 6, 8, 9])
    s.add(second)
    run_all(s)
    assert second.num_cached_prompt_tokens == 28
    assert second.num_prefilled_tokens == second.prompt_len - 28
    assert s.prefix_hit_tokens >= 28


def test_simultaneous_arrivals_compute_a_shared_prefix_once():
    s = make(budget=256)
    prefix = list(range(1000, 1040))
    seqs = [seq(f"r{i}", prefix + [i, i + 1]) for i in range(4)]
    for q in seqs:
        s.add(q)
    run_all(s)
    assert all(q.is_finished for q in seqs)
    assert sum(q.num_prefilled_tokens for q in seqs) == 42 + 3 * (42 - 40)
    assert s.prefill_tokens == 42 + 3 * 2


def test_preemption_under_a_tiny_pool_completes_everything():
    s = make(num_blocks=12, budget=64, max_num_seqs=8)
    seqs = [seq(f"r{i}", range(i * 100, i * 100 + 9), max_tokens=12) for i in range(6)]
    for q in seqs:
        s.add(q)
    done = run_all(s)
    assert len(done) == 6 and all(q.output_token_ids == [7] * 12 for q in seqs)
    assert s.num_preemptions > 0
    # Nothing leaks: every used block is one the prefix cache holds (and may evict).
    assert s.bm.num_used == s.cache.num_blocks
    s.cache.evict(10**6)
    assert s.bm.num_free == s.bm.num_blocks


def test_preemption_without_prefix_cache_recomputes():
    s = make(num_blocks=10, cache=False, budget=64)
    seqs = [seq(f"r{i}", range(i * 50, i * 50 + 7), max_tokens=10) for i in range(5)]
    for q in seqs:
        s.add(q)
    run_all(s)
    assert all(q.is_finished and q.num_output_tokens == 10 for q in seqs)
    assert s.num_preemptions > 0
    assert any(q.num_prefilled_tokens > q.prompt_len for q in seqs)   # recomputed after preemption
    assert s.bm.num_free == s.bm.num_blocks


def test_request_that_can_never_fit_is_refused_and_harms_nothing():
    s = make(num_blocks=4, budget=64)
    ok = seq("ok", range(5), max_tokens=3)
    s.add(ok)
    with pytest.raises(RequestTooLargeError, match="KV blocks"):
        s.add(seq("big", range(20), max_tokens=10))
    with pytest.raises(RequestTooLargeError, match="max_model_len"):
        make(max_model_len=8).add(seq("long", range(8)))
    run_all(s)
    assert ok.is_finished and ok.num_output_tokens == 3 and s.find("big") is None


def test_compiling_request_does_not_block_the_queue():
    s = make()
    slow = seq("slow", range(5))
    slow.compile_future = Future()
    s.add(slow)
    fast = seq("fast", range(10, 15))
    s.add(fast)
    out = fake_step(s)
    assert [x.seq.request_id for x in out.scheduled] == ["fast"]
    assert slow.status is SequenceStatus.WAITING and s.waiting[0] is slow   # keeps its place
    slow.cursor = object()               # compiled
    out = fake_step(s)
    assert "slow" in [x.seq.request_id for x in out.scheduled]


def test_finish_frees_blocks_at_once():
    s = make(cache=False)
    q = seq("a", range(10), max_tokens=50)
    s.add(q)
    fake_step(s)
    fake_step(s)
    assert s.bm.num_used > 0
    s.finish(q, "abort")
    assert s.bm.num_used == 0 and q.finish_reason == "abort" and not s.running


def test_max_num_seqs_caps_the_batch():
    s = make(max_num_seqs=2, budget=64)
    for i in range(5):
        s.add(seq(f"r{i}", range(i * 10, i * 10 + 3), max_tokens=3))
    out = fake_step(s)
    assert len(out.scheduled) == 2 and len(s.running) == 2


def test_rejected_drafts_free_their_blocks_and_never_reach_the_cache():
    s = make(budget=64)
    q = seq("a", range(1, 8), max_tokens=50)           # 7 prompt tokens
    s.add(q)
    fake_step(s)                                        # prefill; token 7 appended -> 8 tokens, 7 computed
    q.draft_tokens = [50, 51, 52, 53, 54, 55]
    out = s.schedule()
    (sc,) = out.scheduled
    assert sc.num_new_tokens == 7 and sc.num_drafts == 6 and sc.num_logits == 7
    assert len(q.block_table) == 4                      # 14 tokens
    q.append_tokens([50])                               # one draft accepted (+ a bonus token below)
    q.draft_tokens = []
    s.commit(sc, num_accepted_drafts=1)
    assert q.num_computed_tokens == 9
    assert len(q.block_table) == 3                      # the block holding only rejected KV went back
    q.append_tokens([60])
    s.finish(q, "stop")
    m = s.cache.match_prefix(q.token_ids + [0])
    assert m.num_tokens == 8                            # committed pages only, never 51..55
    assert s.cache.match_prefix(list(range(1, 8)) + [7, 50, 51, 52, 53, 0]).num_tokens == 8


def test_bad_pool_sizes_are_value_errors():
    with pytest.raises(ValueError):
        BlockManager(0, 4)


# ----- prompt logprobs (GenerateRequest.prompt_logprobs_from) -----

def lp_seq(rid, prompt, start, max_tokens=2):
    return Sequence(GenerateRequest(rid, list(prompt), SamplingParams(max_tokens=max_tokens),
                                    prompt_logprobs_from=start))


def prompt_rows_until_first_token(s: Scheduler, q: Sequence, limit=200):
    """Step until `q` has its first token; the positions whose logits its prompt rows asked for, in order, and
    the most prompt rows any step held."""
    positions, most = [], 0
    for _ in range(limit):
        if q.num_output_tokens:
            break
        out = fake_step(s)
        most = max(most, sum(sc.num_prompt_logits for sc in out.scheduled))
        for sc in out.scheduled:
            if sc.seq is q and sc.num_prompt_logits:
                first = sc.first_prompt_logits_position
                # Prompt rows are the chunk's last positions, just before its sampled rows.
                assert first + sc.num_prompt_logits + sc.num_logits == sc.context_len + sc.num_new_tokens
                positions.extend(range(first, first + sc.num_prompt_logits))
    return positions, most


@pytest.mark.parametrize("start", [0, 1, 9, 21])
def test_prompt_logprobs_ask_for_every_position_from_the_start_on_once(start):
    s = make(budget=8)                                  # 22 prompt tokens: prefilled in three chunks
    q = lp_seq("q", range(100, 122), start)
    s.add(q)
    positions, _ = prompt_rows_until_first_token(s, q)
    # Token i's logprob is read off the logits at i - 1; position 21's row is the sampled one.
    assert positions == list(range(max(start, 1) - 1, 21))


def test_the_prefix_cache_is_not_used_past_the_first_position_that_needs_logits():
    s = make(budget=256)
    prompt = list(range(200, 230))                      # 30 tokens, 7 full pages once cached
    s.add(seq("warm", prompt))
    run_all(s)
    q = lp_seq("q", prompt, 14)
    s.add(q)
    positions, _ = prompt_rows_until_first_token(s, q)
    assert positions == list(range(13, 29))
    assert q.num_cached_prompt_tokens == 12             # the whole pages before position 13
    plain = seq("plain", prompt)                        # a request without the field keeps the whole match
    s.add(plain)
    run_all(s)
    assert plain.num_cached_prompt_tokens == 28


def test_a_preempted_prompt_is_recomputed_with_its_prompt_rows():
    s = make(budget=8)
    q = lp_seq("q", range(300, 320), 0)
    s.add(q)
    fake_step(s)                                        # one chunk of 8, its pages now in the cache
    s._preempt(q)
    positions, _ = prompt_rows_until_first_token(s, q)
    assert positions == list(range(0, 19))              # the cache did not skip positions 0..7


def test_prompt_rows_per_step_are_bounded_by_cutting_chunks():
    bm = BlockManager(64, BS)
    s = Scheduler(bm, RadixCache(BS, bm), max_num_seqs=8, max_num_batched_tokens=64, max_model_len=512,
                  max_prompt_logprob_rows=5)
    a, b = lp_seq("a", range(400, 430), 0), lp_seq("b", range(500, 520), 3)
    s.add(a)
    s.add(b)
    pos_a, most = prompt_rows_until_first_token(s, a)
    assert most <= 5
    assert pos_a == list(range(0, 29))
    run_all(s)
    assert b.is_finished
    with pytest.raises(ValueError, match="max_prompt_logprob_rows"):
        Scheduler(bm, None, max_num_seqs=1, max_num_batched_tokens=8, max_model_len=64, max_prompt_logprob_rows=0)


def test_no_prompt_rows_once_the_first_token_is_out():
    s = make(budget=64)
    q = lp_seq("q", range(600, 610), 0, max_tokens=4)
    s.add(q)
    fake_step(s)                                        # the whole prompt and the first token
    assert q.num_output_tokens == 1
    out = fake_step(s)
    assert [sc.num_prompt_logits for sc in out.scheduled] == [0]
    s._preempt(q)                                       # a recompute after the first token: cache as usual
    out = fake_step(s)
    (sc,) = out.scheduled
    assert sc.context_len == 8 and sc.num_prompt_logits == 0
