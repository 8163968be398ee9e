"""Speculation under constraints: draft masks and cuts, prompt lookup, greedy and sampling verification, adaptive k.

The statistical tests run a tiny-vocabulary target/draft pair with a prefix-dependent constraint and compare the
distribution of generated sequences with the exact constrained target distribution (chi-square, fixed seeds).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch

import structgen
from structgen.engine.speculative import (
    AdaptiveDraftLength, Draft, PromptLookup, allowed_from_bitmask, constrain_draft, greedy_verify, mask_logits,
    sample_verify, space_aliases, target_probs,
)
from structgen.fsm import bitmask


@pytest.fixture(scope="module")
def tok():
    return structgen.default_tokenizer()


# ----- the constraint along a draft -----------------------------------------------------------------------------

def test_constrain_draft_cuts_at_the_first_rejected_token_and_fills_rows(tok):
    compiled = structgen.compile_regex(r"[0-9]{2,4}-[a-z]+")
    cur = compiled.cursor()
    draft = tok.encode("12") + tok.encode("-") + tok.encode("abc") + tok.encode("X!")
    rows = bitmask.allocate(len(draft) + 1, tok.vocab_size)
    n = constrain_draft(cur, draft, eos_token_ids=tok.eos_token_ids, bitmask_rows=rows)
    assert n == len(tok.encode("12") + tok.encode("-") + tok.encode("abc"))
    assert cur.num_advanced == 0, "the cursor must be rolled back"
    # Row i is the mask at draft position i: replay with a fresh cursor and compare.
    ref = compiled.cursor()
    for i in range(n + 1):
        assert np.array_equal(rows[i], ref.mask()), f"row {i}"
        if i < n:
            assert ref.advance(draft[i])
    assert not bitmask.is_allowed(rows[n], draft[n])


def test_constrain_draft_stops_after_eos_and_handles_no_cursor(tok):
    eos = next(iter(tok.eos_token_ids))
    compiled = structgen.compile_regex(r"ab")
    draft = tok.encode("ab") + [eos] + tok.encode("cd")
    assert constrain_draft(compiled.cursor(), draft, eos_token_ids=tok.eos_token_ids) == len(tok.encode("ab")) + 1
    assert constrain_draft(None, draft, eos_token_ids=tok.eos_token_ids) == len(tok.encode("ab")) + 1
    assert constrain_draft(None, [5, 6, 7]) == 3


def test_draft_validates_its_parts():
    with pytest.raises(ValueError):
        Draft([1, 2], num_forced=3)
    with pytest.raises(ValueError):
        Draft([1, 2], probs=torch.zeros(3, 8))
    d = Draft([1, 2, 3], num_forced=2, probs=torch.zeros(3, 8)).truncate(1)
    assert d.token_ids == [1] and d.num_forced == 1 and d.probs.shape == (1, 8)


# ----- prompt lookup -----------------------------------------------------------------------------------------------

def test_prompt_lookup_proposes_what_followed_the_latest_longest_match():
    pl = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 8], min_ngram=1, max_ngram=3)
    pl.extend([6, 2, 3])
    # "2 3" occurs at 1-2 and 6-7; "6 2 3" nowhere earlier: the 2-gram's latest match is followed by 7 8 6.
    assert pl.propose(3) == [7, 8, 6]
    pl.extend([4])
    # Now "2 3 4" matches the start (3-gram beats the newer 1-gram match of "4").
    assert pl.propose(2) == [5, 9]
    assert pl.propose(0) == []


def test_prompt_lookup_uses_the_uncommitted_suffix_and_never_matches_itself():
    pl = PromptLookup([10, 11, 12, 13], max_ngram=2)
    assert pl.propose(2) == []  # 13 only occurs as the trailing token
    assert pl.propose(2, suffix=[11]) == [12, 13]
    assert pl.propose(5, suffix=[10, 11]) == [12, 13]


def test_prompt_lookup_falls_back_to_the_leading_space_twin(tok):
    from structgen.engine.jump_forward import vocabulary_bytes

    aliases = space_aliases(vocabulary_bytes(tok).tokens)
    new, space_new = tok.encode("New")[0], tok.encode(" New")[0]
    assert aliases[new] == space_new and space_new not in aliases
    doc = tok.encode("departing from New York on Friday")
    value = tok.encode('{"city":"New')
    assert value[-1] == new
    plain = PromptLookup(doc + value, max_ngram=3)
    assert plain.propose(2) == []
    twin = PromptLookup(doc + value, max_ngram=3, aliases=aliases)
    assert tok.decode(twin.propose(2)) == " York on"


def test_prompt_lookup_incremental_equals_fresh():
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 6, size=300).tolist()
    inc = PromptLookup(toks[:50], max_ngram=3)
    for i in range(50, 300, 7):
        inc.extend(toks[i:i + 7])
        fresh = PromptLookup(toks[:i + 7], max_ngram=3)
        assert inc.propose(4) == fresh.propose(4)


def test_prompt_lookup_rejects_bad_ngram_sizes():
    with pytest.raises(ValueError):
        PromptLookup([1], min_ngram=0)
    with pytest.raises(ValueError):
        PromptLookup([1], min_ngram=3, max_ngram=2)


# ----- greedy verification -----------------------------------------------------------------------------------------

def test_bitmask_unpacking_follows_the_contract():
    v = 70
    allowed = [0, 5, 31, 32, 63, 69]
    rows = torch.from_numpy(np.stack([bitmask.pack(allowed, v), bitmask.pack([], v)]))
    got = allowed_from_bitmask(rows, v)
    assert got[0].nonzero().flatten().tolist() == allowed
    assert not got[1].any()


def test_greedy_verify_accepts_the_agreeing_prefix_under_each_rows_mask():
    v = 40
    logits = torch.randn(7, v)
    # Sequence A: draft of 3; B: draft of 2. Make the raw argmax of A's row 1 disallowed by its mask.
    choice = [3, 8, 1, 12, 20, 21, 5]
    for r, c in enumerate(choice):
        logits[r, c] = 10.0
    logits[1, 30] = 50.0          # disallowed in row 1 below: must not win
    masks = np.stack([bitmask.pack([t for t in range(v) if not (r == 1 and t == 30)], v) for r in range(7)])
    masked = mask_logits(logits, torch.from_numpy(masks))
    out = greedy_verify(masked, [[3, 8, 9], [20, 21]])
    assert out == [(2, 1), (2, 5)]
    assert greedy_verify(masked[:4], [[4, 8, 1]]) == [(0, 3)]
    with pytest.raises(ValueError):
        greedy_verify(masked, [[1]])


# ----- sampling verification: the constrained target distribution is kept ---------------------------------------

V = 5
LENGTH = 3


@functools.lru_cache(maxsize=None)
def _toy_logits(seed: int, prefix: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(hash((seed,) + prefix) % (2**31))
    return torch.randn(V, generator=g) * 1.5                                   # (V,)


def _toy_allowed(prefix: tuple[int, ...]) -> torch.Tensor:
    """A prefix-dependent constraint: no token may repeat the previous one, token 4 only at the start."""
    ok = torch.ones(V, dtype=torch.bool)
    if prefix:
        ok[prefix[-1]] = False
        ok[4] = False
    return ok


@functools.lru_cache(maxsize=None)
def _masked(seed, prefix):
    return _toy_logits(seed, prefix).masked_fill(~_toy_allowed(prefix), float("-inf"))


@functools.lru_cache(maxsize=None)
def _target_row(prefix, temperature, top_k, top_p):
    return target_probs(_masked(1, prefix)[None], temperature, top_k, top_p)[0]   # (V,)


@functools.lru_cache(maxsize=None)
def _draft_row(prefix):
    return torch.softmax(_masked(2, prefix), dim=-1)                          # (V,) the draft model, masked


def _exact_distribution(temperature: float, top_k: int = 0, top_p: float = 1.0) -> dict[tuple, float]:
    out = {}
    for seq in itertools.product(range(V), repeat=LENGTH):
        p = 1.0
        for i in range(LENGTH):
            p *= float(_target_row(seq[:i], temperature, top_k, top_p)[seq[i]])
            if p == 0.0:
                break
        if p > 0:
            out[seq] = p
    return out


def _speculative_sample(gen: torch.Generator, k: int, temperature: float, top_k: int, top_p: float,
                        deterministic: bool, naive: bool = False) -> tuple[int, ...]:
    seq: tuple[int, ...] = ()
    while len(seq) < LENGTH:
        kk = min(k, LENGTH - len(seq) - 1)
        draft, qs = [], []
        for _ in range(kk):
            q = _draft_row(seq + tuple(draft))
            if deterministic:
                t = int(q.argmax())                                           # e.g. a lookup: one fixed guess
            else:
                t = int(torch.multinomial(q, 1, generator=gen))
            draft.append(t)
            qs.append(q)
        probs = torch.stack([_target_row(seq + tuple(draft[:i]), temperature, top_k, top_p)
                             for i in range(kk + 1)])                         # (kk + 1, V)
        if naive:
            n, nxt = kk, int(torch.multinomial(probs[kk], 1, generator=gen))
        else:
            n, nxt = sample_verify(probs, draft, None if deterministic or not qs else torch.stack(qs), gen)
        seq = seq + tuple(draft[:n]) + (nxt,)
    return seq[:LENGTH]


@pytest.fixture
def one_thread():
    # Tiny tensors: intra-op threads only add scheduling stalls on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


@pytest.mark.parametrize("deterministic,temperature,top_k,top_p", [
    (False, 1.0, 0, 1.0),       # draft model, plain sampling
    (True, 1.0, 0, 1.0),        # deterministic proposer (prompt lookup / forced run): q = one-hot
    (False, 0.7, 3, 0.9),       # temperature, top-k and top-p on the target side
])
def test_speculative_sampling_keeps_the_constrained_target_distribution(one_thread, deterministic, temperature, top_k,
                                                                        top_p):
    expected = _exact_distribution(temperature, top_k, top_p)
    gen = torch.Generator().manual_seed(1234)
    n = 4000
    counts: dict[tuple, int] = {}
    for _ in range(n):
        s = _speculative_sample(gen, 2, temperature, top_k, top_p, deterministic)
        counts[s] = counts.get(s, 0) + 1
    assert _chi_square_pvalue(counts, expected, n) > 1e-3


def test_the_statistical_test_detects_a_wrong_acceptance_rule(one_thread):
    # Accepting every draft token samples the draft model's distribution instead: the same test must reject it.
    expected = _exact_distribution(1.0)
    gen = torch.Generator().manual_seed(99)
    n = 4000
    counts: dict[tuple, int] = {}
    for _ in range(n):
        s = _speculative_sample(gen, 2, 1.0, 0, 1.0, deterministic=False, naive=True)
        counts[s] = counts.get(s, 0) + 1
    assert _chi_square_pvalue(counts, expected, n) < 1e-6


def test_sample_verify_is_reproducible_with_a_seeded_generator():
    probs = torch.softmax(torch.randn(4, 9), dim=-1)
    draft = [1, 2, 3]
    a = [sample_verify(probs, draft, None, torch.Generator().manual_seed(s)) for s in range(20)]
    b = [sample_verify(probs, draft, None, torch.Generator().manual_seed(s)) for s in range(20)]
    assert a == b
    with pytest.raises(ValueError):
        sample_verify(probs, [1, 2], None)
    with pytest.raises(ValueError):
        target_probs(probs, 0.0)


def test_a_certain_draft_is_always_accepted():
    probs = torch.zeros(3, 6)
    probs[0, 2] = probs[1, 4] = 1.0
    probs[2] = 1 / 6
    for s in range(10):
        n, _ = sample_verify(probs, [2, 4], None, torch.Generator().manual_seed(s))
        assert n == 2


# ----- adaptive k -----------------------------------------------------------------------------------------------

def test_adaptive_k_grows_with_acceptance_and_stops_when_it_does_not_pay():
    k = AdaptiveDraftLength(8, cost_per_token=0.1, cost_per_sequence=0.1)
    for _ in range(20):
        k.update(4, 4)
    high = k.k()
    assert high >= 6
    for _ in range(20):
        k.update(4, 0)
    assert k.k() == 0
    for _ in range(10):
        k.update(4, 2)
    assert 0 < k.k() < high


def test_adaptive_k_asks_more_of_a_draft_in_a_bigger_batch():
    # a = 2/3 after steady evidence. With a row costing 0.05 and a sequence 0.15 of a one-row forward, the bar a
    # draft position must clear is 0.05 at batch 1 ((2/3)^i > 0.05: i <= 7), 0.4 / 2.05 = 0.195 at batch 8
    # (i <= 4), and 1.6 / 5.65 = 0.283 at batch 32 (i <= 3); with rows as dear as sequences (0.15 each), 1.2 / 2.05
    # = 0.585 at batch 8 (i <= 1).
    k = AdaptiveDraftLength(8, cost_per_token=0.05, cost_per_sequence=0.15)
    for _ in range(40):
        k.update(5, 2)
    assert abs(k.acceptance_rate - 2 / 3) < 0.01  # 2 accepted of 3 judged per verification
    assert [k.k(b) for b in (1, 8, 32)] == [7, 4, 3]
    dear = AdaptiveDraftLength(8, cost_per_token=0.15, cost_per_sequence=0.15)
    for _ in range(40):
        dear.update(5, 2)
    assert dear.k(8) == 1
    free = AdaptiveDraftLength(4, cost_per_token=0.0)
    assert free.k(64) == 4


def test_adaptive_k_validates_its_inputs():
    with pytest.raises(ValueError):
        AdaptiveDraftLength(0)
    with pytest.raises(ValueError):
        AdaptiveDraftLength(4, decay=1.0)
    with pytest.raises(ValueError):
        AdaptiveDraftLength(4).update(2, 3)
