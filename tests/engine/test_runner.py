"""ModelRunner logic (row mapping, masks, sampling) with a fake model; the real model is in test_engine.py."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from structgen.engine.kv_cache import KVCache
from structgen.engine.requests import GenerateRequest, SamplingParams
from structgen.engine.runner import ModelRunner
from structgen.engine.scheduler import ScheduledSequence
from structgen.engine.sequence import Sequence
from structgen.fsm.cursor import Cursor

V = 40          # not a multiple of 32: the last mask word is partly padding
BS = 4


class FakeModel:
    """Logits favour (input token + 1) % V, with a gentle slope so every token has some mass."""

    def __init__(self):
        self.config = SimpleNamespace(vocab_size=V)
        self.device = torch.device("cpu")
        self.calls = []

    def __call__(self, batch, kv):
        self.calls.append(batch)
        ids = batch.input_ids[batch.logits_indices]                       # (N,)
        logits = -0.05 * torch.arange(V, dtype=torch.float32).repeat(len(ids), 1)  # (N, V)
        logits[torch.arange(len(ids)), (ids + 1) % V] += 5.0
        return logits


class SetCursor:
    """A fake constraint cursor: the allowed set is a function of how many tokens were accepted."""

    fill_along = Cursor.fill_along      # the FSM's walk, over this fake's advance / fill_bitmask / rollback

    def __init__(self, allowed_by_step):
        self.allowed_by_step = allowed_by_step
        self.history = []

    def _allowed(self):
        return self.allowed_by_step[min(len(self.history), len(self.allowed_by_step) - 1)]

    def fill_bitmask(self, row):
        row[:] = 0
        for t in self._allowed():
            row[t // 32] |= np.int32(np.uint32(1 << (t % 32)).view(np.int32))

    def advance(self, t):
        if t not in self._allowed():
            return False
        self.history.append(t)
        return True

    def rollback(self, n):
        del self.history[len(self.history) - n:]

    # No end to reach: every allowed token fits any budget >= 1 (the budget guard is tested in test_budget_guard.py).
    def token_fits(self, t, budget):
        return budget >= 1 and t in self._allowed()

    def is_terminated(self):
        return not self._allowed()          # nothing allowed: the fake's "after EOS"


def make_runner(rows=16):
    kv = KVCache(k=torch.zeros(1, 64, BS, 1, 2), v=torch.zeros(1, 64, BS, 1, 2), block_size=BS)
    return ModelRunner(FakeModel(), kv, max_rows=rows)


def decode_seq(rid, last, sampling=SamplingParams(), cursor=None, block=0):
    s = Sequence(GenerateRequest(rid, [1, 2, last], sampling))
    s.num_computed_tokens = 2
    s.block_table = [block]
    if cursor is not None:
        s.cursor = cursor
        s.mask_words = -(-V // 32)
    return s


def sched(s, drafts=0):
    return ScheduledSequence(s, context_len=s.num_computed_tokens, num_new_tokens=s.num_uncomputed_tokens + drafts,
                             num_drafts=drafts, num_logits=1 + drafts)


def test_unconstrained_and_constrained_rows_in_one_batch():
    r = make_runner()
    free = decode_seq("free", 10, block=0)
    cons = decode_seq("cons", 10, cursor=SetCursor([{3, 35}]), block=1)
    out = r.run([sched(free), sched(cons)])
    assert out.sampled == [[11], [3]]                 # 11 is the model's choice; the constraint forbids it
    assert out.num_constrained_rows == 1


def test_padding_bits_and_high_ids_are_masked_correctly():
    r = make_runner()
    cons = decode_seq("c", 10, cursor=SetCursor([{39}]))
    assert r.run([sched(cons)]).sampled == [[39]]    # the only allowed id lives in the partial last word


def test_mid_prefill_chunk_gets_no_rows():
    r = make_runner()
    s = Sequence(GenerateRequest("p", list(range(1, 10))))
    s.block_table = [0, 1, 2]
    chunk = ScheduledSequence(s, context_len=0, num_new_tokens=5, num_logits=0)
    other = decode_seq("d", 20, block=3)
    out = r.run([chunk, sched(other)])
    assert out.sampled == [[], [21]]
    assert r.model.calls[-1].logits_indices.tolist() == [5]


def test_draft_rows_get_one_mask_row_each_and_the_cursor_is_restored():
    r = make_runner()
    cursor = SetCursor([{5, 6}, {7}, {8, 9}, {1}])
    s = decode_seq("s", 4, cursor=cursor)
    s.draft_tokens = [5, 7, 9]
    s.block_table = [0, 1]
    out = r.run([sched(s, drafts=3)])
    # Row j is the model's choice given drafts[:j], masked by the state after drafts[:j].
    assert out.sampled == [[5, 7, 8, 1]]
    assert cursor.history == []


def test_rows_after_a_rejected_draft_do_not_break_sampling():
    r = make_runner()
    cursor = SetCursor([{5}, {7}])
    s = decode_seq("s", 4, cursor=cursor, sampling=SamplingParams(temperature=1.0, seed=1))
    s.draft_tokens = [6, 7]                          # 6 is not allowed
    s.block_table = [0, 1]
    out = r.run([sched(s, drafts=2)])
    assert out.sampled[0][0] == 5 and len(out.sampled[0]) == 3
    assert cursor.history == []


def test_rows_after_a_draft_that_ends_the_output_do_not_break_sampling():
    # A draft ending in a token after which the constraint allows nothing (an accepted EOS): the rows past it are
    # never used, and a sampled request must not fail on an empty distribution there.
    r = make_runner()
    cursor = SetCursor([{5}, {2}, set()])
    s = decode_seq("s", 4, cursor=cursor, sampling=SamplingParams(temperature=1.0, seed=3))
    s.draft_tokens = [5, 2]
    s.block_table = [0, 1]
    out = r.run([sched(s, drafts=2)])
    assert out.sampled[0][:2] == [5, 2] and len(out.sampled[0]) == 3
    assert not out.failed
    assert cursor.history == []


def test_seeded_sampling_is_the_same_alone_and_in_a_batch():
    sp = SamplingParams(temperature=1.5, seed=1234)

    def draw(batch_others):
        r = make_runner()
        seqs = [decode_seq(f"o{i}", 3 + i, sampling=SamplingParams(temperature=1.0, seed=i)) for i in range(batch_others)]
        s = decode_seq("x", 10, sampling=sp)
        s.seed = sp.seed
        seqs.insert(1 if seqs else 0, s)
        for i, q in enumerate(seqs):
            q.block_table = list(range(8 * i, 8 * i + 8))          # room for 32 tokens each
        toks = []
        for _ in range(20):
            res = r.run([sched(q) for q in seqs])
            for q, got in zip(seqs, res.sampled):                   # commit like the engine does
                q.num_computed_tokens = q.num_tokens
                q.append_tokens(got)
            toks.append(res.sampled[seqs.index(s)][0])
        return toks

    alone = draw(0)
    assert alone == draw(3)
    assert len(set(alone)) > 1                         # really sampling, not greedy


def test_top_k_one_and_tiny_top_p_are_greedy():
    for sp in (SamplingParams(temperature=2.0, top_k=1, seed=0), SamplingParams(temperature=2.0, top_p=1e-6, seed=0)):
        r = make_runner()
        got = {r.run([sched(decode_seq("s", 10, sampling=sp))]).sampled[0][0] for _ in range(10)}
        assert got == {11}


def test_too_many_rows_is_an_error():
    r = make_runner(rows=1)
    with pytest.raises(ValueError, match="rows"):
        r.run([sched(decode_seq("a", 1, block=0)), sched(decode_seq("b", 2, block=1))])


class ExplodingCursor(SetCursor):
    def fill_bitmask(self, row):
        raise RuntimeError("state too complex")


def test_a_cursor_that_raises_fails_only_its_row():
    r = make_runner()
    good = decode_seq("good", 10, cursor=SetCursor([{3}]), block=0)
    bad = decode_seq("bad", 10, cursor=ExplodingCursor([{3}]), block=1)
    out = r.run([sched(bad), sched(good)])
    assert out.failed == {"bad": "RuntimeError: state too complex"}
    assert out.sampled[1] == [3]
