"""Budget-aware closing in the engine (issue 13): the runner's guard after sampling, finish reasons, the admission
refusal, drafts and stop strings -- over a fake model of known logits and a fake bracket constraint whose bound is
known exactly (the real constraints and models are in test_budget_real.py)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from structgen.engine.config import EngineConfig
from structgen.engine.engine import LLMEngine
from structgen.engine.kv_cache import KVCache
from structgen.engine.requests import GenerateRequest, SamplingParams
from structgen.engine.speculation import length
from structgen.fsm.cursor import Cursor
from structgen.kernels.sampling import SamplingBatch, sample

# Tokens: one character each, then EOS and a pad that is never allowed.
CHARS = "[]ab"
OPEN, CLOSE, A, B = range(4)
EOS, PAD = 4, 5
V = 6
MAX_DEPTH = 3
MAX_POS = 256


class CharTokenizer:
    vocab_size = V
    eos_token_ids = frozenset([EOS])
    special_token_ids = frozenset([EOS, PAD])
    fingerprint = hashlib.sha256(b"brackets").hexdigest()[:32]

    def token_bytes(self) -> list[bytes]:
        return [c.encode() for c in CHARS] + [b"", b""]

    def encode(self, text: str) -> list[int]:
        return [CHARS.index(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(CHARS[i] for i in ids if i < len(CHARS))


def is_valid(text: str) -> bool:
    """The fake constraint's language: one balanced bracket group of depth <= MAX_DEPTH with letters inside."""
    depth = 0
    for i, c in enumerate(text):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        if depth > MAX_DEPTH or depth < 0 or (i == 0 and c != "[") or (depth == 0 and i < len(text) - 1):
            return False
    return bool(text) and depth == 0


class BracketCursor:
    """A fake constraint with the contract's budget methods: state = open depth (None before the first "[",
    -1 after EOS). Bound: 2 at the start, the depth inside (each "]" closes one), 0 when done -- exact, hence safe
    and consistent."""

    fill_along = Cursor.fill_along      # the FSM's walks, over this fake's advance / fill_bitmask / rollback
    admitted = Cursor.admitted

    def __init__(self):
        self.history: list = []
        self.depth = None
        self.fits_calls = 0

    @property
    def num_advanced(self) -> int:
        return len(self.history)

    def copy(self):
        c = BracketCursor()
        c.history, c.depth = list(self.history), self.depth
        return c

    def _next(self, t):
        d = self.depth
        if d == -1:
            return "dead"
        if t == EOS:
            return -1 if d == 0 else "dead"
        if d is None:
            return 1 if t == OPEN else "dead"
        if d == 0:
            return "dead"
        if t == OPEN:
            return d + 1 if d < MAX_DEPTH else "dead"
        if t == CLOSE:
            return d - 1
        return d if t in (A, B) else "dead"

    @staticmethod
    def _bound(d) -> int:
        return 2 if d is None else max(d, 0)

    def allowed(self) -> list[int]:
        return [t for t in range(V) if self._next(t) != "dead"]

    def advance(self, t) -> bool:
        n = self._next(int(t))
        if n == "dead":
            return False
        self.history.append(self.depth)
        self.depth = n
        return True

    def rollback(self, n):
        for _ in range(n):
            self.depth = self.history.pop()

    def is_final(self) -> bool:
        return self.depth in (0, -1)

    def is_terminated(self) -> bool:
        return self.is_final()

    def min_tokens_to_finish(self) -> int:
        return 0 if self.depth == -1 else self._bound(self.depth)

    def token_fits(self, t, budget) -> bool:
        self.fits_calls += 1
        n = self._next(int(t))
        return budget >= 1 and n != "dead" and 1 + (0 if n == -1 else self._bound(n)) <= budget

    @staticmethod
    def _fill(row, ids):
        row[:] = 0
        for t in ids:
            row[t // 32] |= np.int32(np.uint32(1 << (t % 32)).view(np.int32))

    def fill_bitmask(self, row):
        self._fill(row, self.allowed())

    def fill_bitmask_within(self, row, budget) -> bool:
        allowed = self.allowed()
        fit = [t for t in allowed if self.token_fits(t, budget)]
        self._fill(row, fit)
        return len(fit) < len(allowed)


class Brackets:
    """A 'compiled constraint' the engine attaches: anything with .cursor() and .vocab_size."""

    vocab_size = V

    def cursor(self):
        return BracketCursor()


PREFERENCE = torch.tensor([3.0, 0.0, 2.5, 2.0, -1.0, -5.0])   # "[" > "a" > "b" > "]" > EOS: never closes itself


class PreferModel:
    """The same logits at every position (plus a small position-dependent wobble for sampling tests)."""

    def __init__(self, wobble: float = 0.0):
        self.config = SimpleNamespace(vocab_size=V)
        self.device = torch.device("cpu")
        self.max_positions = MAX_POS
        self.wobble = wobble

    def __call__(self, batch, kv):
        pos = batch.positions[batch.logits_indices].float()            # (N,)
        w = torch.sin(pos[:, None] * torch.arange(1, V + 1).float()) * self.wobble  # (N, V)
        return PREFERENCE.repeat(len(pos), 1) + w


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_engine(drafts: bool = False, wobble: float = 0.0, max_model_len: int = MAX_POS) -> LLMEngine:
    kv = KVCache(k=torch.zeros(1, 512, 16, 1, 2), v=torch.zeros(1, 512, 16, 1, 2), block_size=16)
    cfg = EngineConfig(max_num_seqs=64, max_num_batched_tokens=4096, forced_runs=False,
                       speculation="prompt_lookup" if drafts else "off", num_speculative_tokens=4,
                       max_model_len=max_model_len)
    return LLMEngine(cfg, PreferModel(wobble), CharTokenizer(), kv)


def run(eng, prompts, **sp) -> list:
    reqs = [GenerateRequest(f"r{i}", list(p), SamplingParams(**{k: (v(i) if callable(v) else v)
                                                               for k, v in sp.items()}), constraint=Brackets())
            for i, p in enumerate(prompts)]
    try:
        outs = eng.generate(reqs)
    finally:
        eng.close()
    return [outs[r.request_id] for r in reqs]


def check(out, budget: int) -> None:
    assert out.finish_reason in ("stop", "budget"), out
    assert is_valid(out.text), out.text
    assert len(out.token_ids) <= budget


# ----- greedy ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_tokens", [2, 3, 5, 8, 13])
def test_greedy_closes_exactly_in_time(max_tokens):
    out, = run(make_engine(), [[A, B]], max_tokens=max_tokens)
    check(out, max_tokens)
    assert out.finish_reason == "budget"
    assert len(out.token_ids) == max_tokens, "the budget is used up, then the output closes on its last token"
    depth = min(MAX_DEPTH, max_tokens // 2)
    assert out.text.startswith("[" * depth)         # untouched while every sample fits


def test_a_natural_end_inside_the_budget_is_stop():
    # Closing is the model's own choice when "]" ranks first: no restriction, finish reason "stop".
    class Closer(PreferModel):
        def __call__(self, batch, kv):
            logits = super().__call__(batch, kv)
            logits[:, CLOSE] = 10.0
            return logits

    kv = KVCache(k=torch.zeros(1, 64, 16, 1, 2), v=torch.zeros(1, 64, 16, 1, 2), block_size=16)
    eng = LLMEngine(EngineConfig(forced_runs=False, speculation="off"), Closer(), CharTokenizer(), kv)
    out, = run(eng, [[A]], max_tokens=50)
    assert (out.text, out.finish_reason) == ("[]", "stop")


def test_the_context_room_is_a_budget_too():
    prompt = [A] * 40
    out, = run(make_engine(max_model_len=47), [prompt], max_tokens=100)
    check(out, 7)
    assert out.finish_reason == "budget" and len(out.token_ids) == 7


def test_the_guard_costs_one_fits_check_per_row_and_nothing_changes_with_a_large_budget():
    eng = make_engine()
    req = GenerateRequest("r", [A], SamplingParams(max_tokens=12), constraint=Brackets())
    seq = eng.add_request(req)
    while eng.has_unfinished():
        eng.step()
    assert seq.cursor.fits_calls <= seq.num_output_tokens + 12 * 4   # + the restricted rows' within-fills


# ----- sampling -------------------------------------------------------------------------------------------------------

def test_seeded_sampling_is_valid_within_budget_and_reproducible_alone_and_in_a_batch():
    prompts = [[A, B, A]] * 12
    sp = dict(temperature=1.0, seed=lambda i: 100 + i, max_tokens=lambda i: 3 + i % 7)
    batch = run(make_engine(wobble=1.0), prompts, **sp)
    for i, o in enumerate(batch):
        check(o, 3 + i % 7)
    assert any(o.finish_reason == "budget" for o in batch)
    alone = [run(make_engine(wobble=1.0), [prompts[i]], temperature=1.0, seed=100 + i, max_tokens=3 + i % 7)[0]
             for i in (0, 5, 11)]
    assert [o.token_ids for o in alone] == [batch[i].token_ids for i in (0, 5, 11)]


def test_a_restricted_sample_reuses_the_rows_uniform_draw():
    # One step at depth 2 with budget 2: only "]" fits ("a" would leave 1 token for 2 closes).
    eng = make_engine(wobble=1.0)
    req = GenerateRequest("r", [A, A], SamplingParams(temperature=1.3, top_p=0.9, seed=5, max_tokens=6),
                          constraint=Brackets())
    seq = eng.add_request(req)
    while seq.num_output_tokens < 4 and not seq.is_finished:
        eng.step()
    out = seq.output_token_ids
    # Whatever was sampled, a fresh row restricted by hand samples like the engine: same u, restricted logits.
    cursor = BracketCursor()
    for t in out[:4]:
        assert cursor.advance(t)
    budget = 6 - 4
    pos = len(seq.token_ids) - 1
    logits = PreferModel(1.0)(SimpleNamespace(positions=torch.tensor([pos]), logits_indices=torch.tensor([0])),
                              None)
    row = np.zeros(1, np.int32)
    cursor.fill_bitmask_within(row, budget)
    allowed = [t for t in range(V) if row[0] >> t & 1]
    masked = torch.full_like(logits, float("-inf"))
    masked[0, allowed] = logits[0, allowed]
    want = sample(masked, SamplingBatch.from_lists([1.3], [0], [0.9], [5], [4]))
    while not seq.is_finished:
        eng.step()
    eng.close()
    assert seq.output_token_ids[4] == int(want[0])


# ----- drafts ---------------------------------------------------------------------------------------------------------

LOOKUP_PROMPT = [OPEN, OPEN, A, A, A, A, CLOSE, CLOSE, A, OPEN, OPEN, OPEN, A, A, A, A, A, A, A, A]


@pytest.mark.parametrize("max_tokens", [4, 7, 10, 15])
def test_greedy_outputs_are_the_same_with_drafts_on_and_off(monkeypatch, max_tokens):
    monkeypatch.setitem(length.DRAFT_COSTS, "cpu", (0.0, 0.0))   # drafting always pays: every step verifies
    plain = run(make_engine(), [LOOKUP_PROMPT, [A]], max_tokens=max_tokens)
    eng = make_engine(drafts=True)
    drafted = run(eng, [LOOKUP_PROMPT, [A]], max_tokens=max_tokens)
    assert [o.token_ids for o in drafted] == [o.token_ids for o in plain]
    assert [o.finish_reason for o in drafted] == [o.finish_reason for o in plain]
    for o in drafted:
        check(o, max_tokens)
    assert eng.drafter.proposed_tokens > 0


def test_sampled_outputs_with_drafts_are_valid_and_within_budget(monkeypatch):
    monkeypatch.setitem(length.DRAFT_COSTS, "cpu", (0.0, 0.0))
    outs = run(make_engine(drafts=True, wobble=1.0), [LOOKUP_PROMPT] * 10, temperature=0.8,
               seed=lambda i: i, max_tokens=lambda i: 4 + i)
    for i, o in enumerate(outs):
        check(o, 4 + i)


# ----- admission ------------------------------------------------------------------------------------------------------

def test_a_constraint_that_cannot_finish_within_the_budget_is_refused_up_front():
    out, = run(make_engine(), [[A]], max_tokens=1)
    assert out.finish_reason == "error" and out.token_ids == []
    assert out.error == ("the constraint needs at least 2 tokens to complete but the budget is 1 "
                         "(max_tokens=1, context room=255)")


def test_the_refusal_counts_the_context_room():
    out, = run(make_engine(max_model_len=12), [[A] * 11], max_tokens=50)
    assert out.finish_reason == "error"
    assert out.error == ("the constraint needs at least 2 tokens to complete but the budget is 1 "
                         "(max_tokens=50, context room=1)")


# ----- stop strings ---------------------------------------------------------------------------------------------------

class TrailingCursor(BracketCursor):
    """The bracket language followed by any letters: "[a]bb" is complete but can go on (final, not terminated)."""

    def _next(self, t):
        if self.depth == 0 and t in (A, B):
            return 0
        return super()._next(t)

    def is_terminated(self) -> bool:
        return self.depth == -1

    def copy(self):
        c = TrailingCursor()
        c.history, c.depth = list(self.history), self.depth
        return c


class Trailing(Brackets):
    def cursor(self):
        return TrailingCursor()


class Script(PreferModel):
    """Greedy output "[a]bbbb...": the output token at position p is SCRIPT[p] (prompt of one token)."""

    SCRIPT = [OPEN, A, CLOSE]

    def __call__(self, batch, kv):
        pos = batch.positions[batch.logits_indices].tolist()
        logits = torch.zeros(len(pos), V)
        for i, p in enumerate(pos):
            logits[i, self.SCRIPT[p] if p < len(self.SCRIPT) else B] = 5.0
        return logits


@pytest.mark.parametrize("stop,text,reason", [
    (("b",), "[a]", "stop"),                # the text before "b" is complete: the stop string ends it
    (("a", "b"), "[a]", "stop"),            # "a" first matches after "[" (incomplete): ignored
    (("]",), "[a]bbbbb", "budget"),         # before "]" is "[a": ignored, decoding goes on to the budget
    (("a]b",), "[a]bbbbb", "budget"),       # before "a]b" is "[": ignored
    ((), "[a]bbbbb", "budget"),
])
def test_a_stop_string_ends_a_constrained_output_only_where_the_text_before_it_is_complete(stop, text, reason):
    kv = KVCache(k=torch.zeros(1, 64, 16, 1, 2), v=torch.zeros(1, 64, 16, 1, 2), block_size=16)
    eng = LLMEngine(EngineConfig(forced_runs=False, speculation="off"), Script(), CharTokenizer(), kv)
    req = GenerateRequest("r", [A], SamplingParams(max_tokens=8, stop=stop), constraint=Trailing())
    out = eng.generate([req])["r"]
    eng.close()
    assert (out.text, out.finish_reason) == (text, reason)


def test_a_stop_string_still_ends_an_unconstrained_output_anywhere():
    kv = KVCache(k=torch.zeros(1, 64, 16, 1, 2), v=torch.zeros(1, 64, 16, 1, 2), block_size=16)
    eng = LLMEngine(EngineConfig(forced_runs=False, speculation="off"), Script(), CharTokenizer(), kv)
    out = eng.generate([GenerateRequest("r", [A], SamplingParams(max_tokens=8, stop=("]",)))])["r"]
    eng.close()
    assert (out.text, out.finish_reason) == ("[a", "stop")
