"""The acceptance rule, and the statistical test of the live path: an LLMEngine over a fake model with known
logits, a regex constraint and prompt-lookup drafts that are often wrong, sampled with temperature, top-k and top-p;
the distribution of its outputs must be the exact masked target distribution (chi-square, fixed seeds). The same
test must reject a wrong acceptance rule (accepting every draft)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import structgen
from structgen.engine.config import EngineConfig
from structgen.engine.engine import LLMEngine
from structgen.engine.kv_cache import KVCache
from structgen.engine.requests import GenerateRequest, SamplingParams
from structgen.engine.speculation import length, verify


def test_accept_keeps_the_drafts_equal_to_the_samples_then_the_next_sample():
    assert verify.accept([3, 8, 9], [3, 8, 1, 7]) == (2, [3, 8, 1])
    assert verify.accept([3, 8], [3, 8, 5]) == (2, [3, 8, 5])
    assert verify.accept([4], [2, 6]) == (0, [2])
    assert verify.accept([], [5]) == (0, [5])


# ----- the live path ------------------------------------------------------------------------------------------------

LETTERS = "abcd"
EOS, PAD = len(LETTERS), len(LETTERS) + 1
V = len(LETTERS) + 2
PATTERN = "[ab][abcd][acd]?"          # 2 or 3 letters: EOS after two, nothing after three
PROMPT = [0, 1, 2, 0, 1, 3, 0, 2, 1, 0, 3, 0]   # lookup finds earlier continuations of the last tokens
MAX_POS = 64


class LetterTokenizer:
    """One token per letter, then EOS and a pad that is never allowed."""

    vocab_size = V
    eos_token_ids = frozenset([EOS])
    special_token_ids = frozenset([EOS, PAD])
    fingerprint = hashlib.sha256(b"letters-" + LETTERS.encode()).hexdigest()[:32]

    def token_bytes(self) -> list[bytes]:
        return [c.encode() for c in LETTERS] + [b"", b""]

    def encode(self, text: str) -> list[int]:
        return [LETTERS.index(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(LETTERS[i] for i in ids if i < len(LETTERS))


def _table() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(MAX_POS, V, V, generator=g) * 1.5                   # (positions, input token, V)


class MarkovModel:
    """Logits of the next token = table[position, input token]: a function of the last token and its position
    only, so every row of a batched, drafted forward has the logits plain decoding would see."""

    def __init__(self):
        self.config = SimpleNamespace(vocab_size=V)
        self.device = torch.device("cpu")
        self.max_positions = MAX_POS
        self.table = _table()

    def __call__(self, batch, kv):
        rows = batch.logits_indices
        return self.table[batch.positions[rows], batch.input_ids[rows]].clone()   # (N, V) float32


def _row_probs(logits: torch.Tensor, allowed: list[int], temperature: float, top_k: int, top_p: float) -> dict:
    """What the sampler draws from (structgen/kernels/sampling.py): masked softmax(logits / T), top-k by rank, then
    the smallest prefix reaching top_p, renormalized."""
    scaled = {t: float(logits[t]) / temperature for t in allowed}
    order = sorted(allowed, key=lambda t: -scaled[t])
    if top_k:
        order = order[:top_k]
    z = np.logaddexp.reduce([scaled[t] for t in order])
    probs = [(t, float(np.exp(scaled[t] - z))) for t in order]
    kept, before = [], 0.0
    for t, p in probs:
        if before >= top_p:
            break
        kept.append((t, p))
        before += p
    total = sum(p for _, p in kept)
    return {t: p / total for t, p in kept}


def _exact_distribution(compiled, temperature: float, top_k: int, top_p: float) -> dict[tuple, float]:
    """Output token tuple (EOS not shown) -> probability, by walking every path the constraint admits."""
    table = _table()
    out: dict[tuple, float] = {}

    def walk(cursor, generated: tuple, prev: int, pos: int, p: float):
        allowed = cursor.allowed_token_ids().tolist()
        for tok, q in _row_probs(table[pos, prev], allowed, temperature, top_k, top_p).items():
            if tok == EOS:
                out[generated] = out.get(generated, 0.0) + p * q
                continue
            assert cursor.advance(tok)
            if cursor.is_terminated():
                out[generated + (tok,)] = out.get(generated + (tok,), 0.0) + p * q
            else:
                walk(cursor, generated + (tok,), tok, pos + 1, p * q)
            cursor.rollback(1)

    walk(compiled.cursor(), (), PROMPT[-1], len(PROMPT) - 1, 1.0)
    return out


def _chi_square_pvalue(counts: dict, expected: dict[tuple, float], n: int) -> float:
    assert set(counts) <= set(expected), f"sampled sequences the constraint forbids: {set(counts) - set(expected)}"
    obs = np.array([counts.get(s, 0) for s in expected], dtype=np.float64)
    exp = np.array([expected[s] * n for s in expected], dtype=np.float64)
    # Pool the rare cells (expected < 5) into one so the chi-square approximation holds.
    rare = exp < 5
    obs = np.append(obs[~rare], obs[rare].sum())
    exp = np.append(exp[~rare], exp[rare].sum())
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    df = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))


@pytest.fixture
def one_thread():
    # Tiny tensors: intra-op threads only add scheduling stalls on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def letters():
    tok = LetterTokenizer()
    return tok, structgen.compile_regex(PATTERN, tok)


def _engine_counts(monkeypatch, letters, n: int, temperature: float, top_k: int, top_p: float):
    tok, compiled = letters
    # Drafting always pays (k = num_speculative_tokens whatever the batch), so every step verifies drafts.
    monkeypatch.setitem(length.DRAFT_COSTS, "cpu", (0.0, 0.0))
    kv = KVCache(k=torch.zeros(1, 1024, 16, 1, 2), v=torch.zeros(1, 1024, 16, 1, 2), block_size=16)
    cfg = EngineConfig(max_num_seqs=256, max_num_batched_tokens=4096, forced_runs=False,
                       speculation="prompt_lookup", num_speculative_tokens=3, max_model_len=MAX_POS)
    eng = LLMEngine(cfg, MarkovModel(), tok, kv)
    try:
        sp = dict(temperature=temperature, top_k=top_k, top_p=top_p, max_tokens=8)
        reqs = [GenerateRequest(f"r{i}", list(PROMPT), SamplingParams(seed=i, **sp), constraint=compiled)
                for i in range(n)]
        outs = eng.generate(reqs)
    finally:
        eng.close()
    counts: dict[tuple, int] = {}
    for o in outs.values():
        assert o.finish_reason == "stop", o
        counts[tuple(o.token_ids)] = counts.get(tuple(o.token_ids), 0) + 1
    d = eng.drafter
    assert d.proposed_tokens > n // 2, "the lookup must draft"
    return counts, d.proposed_tokens, d.accepted_proposed_tokens


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.3, 0, 0.8)])
def test_the_engine_keeps_the_masked_target_distribution_with_drafts(monkeypatch, one_thread, letters, temperature,
                                                                    top_k, top_p):
    n = 3000
    counts, proposed, accepted = _engine_counts(monkeypatch, letters, n, temperature, top_k, top_p)
    assert 0 < accepted < proposed, "drafts must be sometimes right and sometimes wrong"
    expected = _exact_distribution(letters[1], temperature, top_k, top_p)
    assert _chi_square_pvalue(counts, expected, n) > 1e-3


def test_the_statistical_test_detects_a_wrong_acceptance_rule(monkeypatch, one_thread, letters):
    # Accepting every draft outputs the lookup's guesses instead of samples: the same test must reject it.
    monkeypatch.setattr(verify, "accept", lambda drafts, sampled: (len(drafts), [*drafts, sampled[len(drafts)]]))
    n = 3000
    counts, _, _ = _engine_counts(monkeypatch, letters, n, 1.0, 0, 1.0)
    expected = _exact_distribution(letters[1], 1.0, 0, 1.0)
    assert _chi_square_pvalue(counts, expected, n) < 1e-6
