"""The bound on the tokens still needed to finish (structgen/fsm/budget.py, Cursor.min_tokens_to_finish /
token_fits / fill_bitmask_within): safe, consistent, exact where it should be, and the same set both ways."""

from __future__ import annotations

import json
import random
from collections import deque
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from token_fakes import FakeTokenizer, byte_tokens, toy_tokenizer

import structgen
from structgen.fsm import bitmask
from structgen.fsm.budget import UNREACHABLE
from structgen.fsm.api import compile_choice, compile_json_schema, compile_regex

SCHEMAS = sorted((Path(__file__).resolve().parents[2] / "schemas").glob("*.json"))
_TOY = toy_tokenizer()
_BYTES_ONLY = FakeTokenizer(byte_tokens(), name="bytes-only")
# No single-byte token for "b", "c", "}" or "0": those bytes are spelled only inside longer tokens.
_GAPPY = FakeTokenizer([bytes([b]) for b in range(256) if b not in b"bc}0"]
                       + [b"ab", b"bc", b"cb", b"b}", b"c}", b"}}", b"00", b"0}", b"\"}", b"ba", b"1b"], name="gappy")


@pytest.fixture(scope="module")
def real_tok():
    return structgen.default_tokenizer()


# ---- oracles and walks -----------------------------------------------------------------------------------------

def true_token_distance(cur, limit: int = 400) -> int | None:
    """Brute force: BFS over token transitions (by state) from the cursor's state to a final state (None when
    it would visit more than `limit` states: too large to check here)."""
    start = cur.copy()
    seen = {start.state}
    todo = deque([(start, 0)])
    while todo:
        c, d = todo.popleft()
        if c.is_final():
            return d
        for t in c.allowed_token_ids().tolist():
            n = c.copy()
            if not n.advance(t) or n.state in seen:
                continue
            seen.add(n.state)
            todo.append((n, d + 1))
        if len(seen) >= limit:
            return None
    raise AssertionError("no final state reachable")


def random_walk(cur, rng: random.Random, steps: int):
    """Advance by random allowed non-EOS tokens for up to `steps` tokens."""
    eos = set(cur._eos)
    for _ in range(steps):
        ids = [t for t in cur.allowed_token_ids().tolist() if t not in eos]
        if not ids:
            break
        cur.advance(rng.choice(ids))
    return cur


def close_within(cur, budget: int, rng: random.Random) -> list[int]:
    """Emit random fitting tokens (never EOS) until none fits or the budget is spent; return them."""
    out = []
    row = np.zeros(cur.num_words, dtype=np.int32)
    eos = set(cur._eos)
    while budget > 0:
        cur.fill_bitmask_within(row, budget)
        ids = [t for t in bitmask.unpack(row).tolist() if t not in eos]
        if not ids:
            break
        t = rng.choice(ids)
        assert cur.token_fits(t, budget)
        assert cur.advance(t)
        out.append(t)
        budget -= 1
    return out


def check_state(cur, rng: random.Random, *, exact: bool = False, oracle: bool = True) -> None:
    """Safety, consistency, (exactness) and mask == token_fits at the cursor's state."""
    b = cur.min_tokens_to_finish()
    assert (b == 0) == cur.is_final()
    if b == UNREACHABLE:
        # A token walk stranded where only unspellable bytes continue: nothing fits, whatever the budget.
        try:
            assert true_token_distance(cur) is None, "the oracle finds a way out"  # None: too large to check
        except AssertionError as e:
            assert "no final state" in str(e)
        assert not any(cur.token_fits(t, 1 << 20) for t in cur.allowed_token_ids().tolist())
        return
    if oracle:
        t = true_token_distance(cur)
        assert t is None or b >= t, "the bound is below the true distance: unsafe"
        if exact and t is not None:
            assert b == t
    # consistency: from a non-final state some allowed token lowers the bound.
    if b:
        allowed = cur.allowed_token_ids().tolist()
        best = min(1 + _bound_after(cur, tk) for tk in allowed if tk not in cur._eos)
        assert best <= b, f"no allowed token lowers the bound {b}"
    # fill_bitmask_within == {t : token_fits(t)} for budgets around the bound.
    row = np.zeros(cur.num_words, dtype=np.int32)
    for budget in sorted({0, 1, max(b - 1, 0), b, b + 1, b + 3}):
        removed = cur.fill_bitmask_within(row, budget)
        got = set(bitmask.unpack(row).tolist())
        want = {tk for tk in cur.allowed_token_ids().tolist() if cur.token_fits(tk, budget)}
        assert got == want, f"budget {budget}"
        assert removed == (got != set(cur.allowed_token_ids().tolist()))
        if budget >= max(b, 1):
            assert got, "empty mask although the bound fits the budget"
    # safety: random fitting tokens with budget = bound always end in a final state.
    walker = cur.copy()
    toks = close_within(walker, max(b, 0), rng)
    assert len(toks) <= b and walker.is_final(), "a budget equal to the bound did not close the output"


def _bound_after(cur, tok: int) -> int:
    c = cur.copy()
    assert c.advance(tok)
    return c.min_tokens_to_finish()


def explore(compiled, seed: int, walks: int = 4, steps: int = 6, **kw):
    rng = random.Random(seed)
    for _ in range(walks):
        cur = random_walk(compiled.cursor(), rng, rng.randrange(steps + 1))
        check_state(cur, rng, **kw)


# ---- small automata, toy vocabularies --------------------------------------------------------------------------

REGEXES = [r"abc", r"(ab|ba)*c", r"[0-9]{3}-[a-c]+", r"x?y?z{2,4}", r"(yes|no|maybe)", r"a{5}(bc)?",
           r"\{\"[a-c]{1,3}\":[0-9]+\}", r"Zür(ich)?|rich"]


@pytest.mark.parametrize("pattern", REGEXES)
def test_regex_bound_is_exact_with_single_byte_tokens(pattern):
    compiled = compile_regex(pattern, _BYTES_ONLY)
    explore(compiled, seed=hash(pattern) & 0xFFFF, exact=True)
    assert compiled.cursor().min_tokens_to_finish() == len(compiled.bounds.completion(0))


@pytest.mark.parametrize("pattern", REGEXES)
def test_regex_bound_with_merges_is_safe_and_consistent(pattern):
    explore(compile_regex(pattern, _TOY), seed=7)


@pytest.mark.parametrize("pattern", [r"abc}", r"(bc|cb)+00", r"[bc]{2,3}\}", r"a0{1,2}", r"\{\"ab\"\}",
                                     r"(bc|cb)+0"])
def test_bytes_without_their_own_token_fall_back_to_a_token_search(pattern):
    compiled = compile_regex(pattern, _GAPPY)
    explore(compiled, seed=3, walks=8)
    cur = compiled.cursor()
    if pattern.endswith("+0"):
        # "0" is spelled only by "00" / "0}", so nothing after "bc"/"cb" can end: unreachable from the start.
        assert cur.min_tokens_to_finish() == UNREACHABLE
    else:
        # The byte count alone would be too small ("b" has no token of its own): the token search is exact.
        assert cur.min_tokens_to_finish() == true_token_distance(cur)


def test_gappy_vocabulary_bound_is_exact_where_only_the_search_applies():
    # Every completion needs "b" or "}", which no single-byte token spells: the bound is a token search.
    compiled = compile_regex(r"(bb|b}|}})+", _GAPPY)
    explore(compiled, seed=5, exact=True)


@pytest.mark.parametrize("choices", [["yes", "no"], ["aaa", "aab", "b"], ["Zürich", "rich", "ri"], ["x"]])
def test_choice_bound(choices):
    explore(compile_choice(choices, _TOY), seed=11)
    explore(compile_choice(choices, _BYTES_ONLY), seed=11, exact=True)
    c = compile_choice(choices, _BYTES_ONLY).cursor()
    assert c.min_tokens_to_finish() == min(len(x.encode()) for x in choices)


def test_after_eos_bound_is_zero_and_nothing_fits():
    compiled = compile_choice(["yes"], _TOY)
    cur = compiled.cursor()
    for t in compiled.encode("yes"):
        assert cur.advance(t)
    assert cur.min_tokens_to_finish() == 0
    eos = _TOY.eos_token_id
    assert cur.token_fits(eos, 1) and not cur.token_fits(eos, 0)
    assert cur.advance(eos)
    assert cur.min_tokens_to_finish() == 0
    row = np.full(cur.num_words, -1, dtype=np.int32)
    assert cur.fill_bitmask_within(row, 10) is False
    assert not row.any()
    assert not any(cur.token_fits(t, 10) for t in range(_TOY.vocab_size))


def test_token_fits_leaves_the_cursor_alone_and_rejects_bad_tokens():
    cur = compile_regex(r"[0-9]{3}", _TOY).cursor()
    # The bound spells the canonical shortest completion "000" greedily: 3 tokens, although the single token
    # "123" also finishes (the bound is safe and consistent, not always the fewest tokens).
    assert cur.min_tokens_to_finish() == 3
    assert not cur.token_fits(_TOY.encode("a")[0], 10)
    assert not cur.token_fits(_TOY.eos_token_id, 10)
    one_two_three = _TOY.encode("123")
    assert one_two_three and len(one_two_three) == 1
    assert cur.token_fits(one_two_three[0], 1) and cur.num_advanced == 0
    one = _TOY.encode("1")[0]  # then "00": two more
    assert not cur.token_fits(one, 2) and cur.token_fits(one, 3)


# ---- random schemas, regexes and choices (hypothesis) ------------------------------------------------------

def _leaf():
    return st.one_of(
        st.builds(lambda lo, hi: {"type": "string", "minLength": lo, "maxLength": lo + hi},
                  st.integers(0, 3), st.integers(0, 3)),
        st.just({"type": "string"}),
        st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
                  st.integers(-50, 200), st.integers(0, 500)),
        st.just({"type": "number"}),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.lists(st.sampled_from(["a", "bb", "ccc", "yes", "no"]), min_size=1, max_size=3, unique=True)
        .map(lambda xs: {"enum": xs}),
        st.just({"type": "string", "pattern": "^[a-c]{2,4}$"}),
        st.just({"type": "string", "format": "date"}),
    )


def _schema():
    def obj(children):
        return st.builds(
            lambda props, req: {"type": "object", "properties": props,
                                "required": [k for k, r in zip(props, req) if r]},
            st.dictionaries(st.sampled_from(["id", "name", "tags", "x", "total"]), children, min_size=1, max_size=3),
            st.lists(st.booleans(), min_size=3, max_size=3))

    def arr(children):
        return st.builds(lambda it, lo, hi: {"type": "array", "items": it, "minItems": lo, "maxItems": lo + hi},
                         children, st.integers(0, 2), st.integers(0, 2))

    return st.recursive(_leaf(), lambda ch: st.one_of(obj(ch), arr(ch)), max_leaves=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_schema(), seed=st.integers(0, 10_000))
def test_random_schemas_toy_tokenizer(schema, seed):
    compiled = compile_json_schema(schema, _TOY)
    explore(compiled, seed, walks=2, steps=8, oracle=False)
    _check_shortest_document(compiled, schema, seed)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(schema=_schema(), seed=st.integers(0, 10_000))
def test_random_schemas_real_tokenizer(real_tok, schema, seed):
    compiled = compile_json_schema(schema, real_tok)
    explore(compiled, seed, walks=2, steps=6, oracle=False)
    _check_shortest_document(compiled, schema, seed)


_PIECES = ["a", "b", "[0-9]", "[a-c]", "(x|yz)", "-", "\\.", "ü", "[ü-ÿ]"]


@st.composite
def _regex(draw):
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        p = draw(st.sampled_from(_PIECES))
        q = draw(st.sampled_from(["", "?", "*", "+", "{2}", "{1,3}"]))
        parts.append(p + q)
    return "".join(parts)


@settings(max_examples=20, deadline=None)
@given(pattern=_regex(), seed=st.integers(0, 10_000))
def test_random_regexes(pattern, seed):
    explore(compile_regex(pattern, _BYTES_ONLY), seed, walks=2, exact=True)
    explore(compile_regex(pattern, _TOY), seed, walks=2)
    explore(compile_regex(pattern, _GAPPY), seed, walks=2)


@settings(max_examples=20, deadline=None)
@given(choices=st.lists(st.text("abcü}0 ", min_size=1, max_size=5), min_size=1, max_size=4, unique=True),
       seed=st.integers(0, 10_000))
def test_random_choices(choices, seed):
    for tok in (_TOY, _GAPPY):
        explore(compile_choice(choices, tok), seed, walks=2)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=_regex(), seed=st.integers(0, 10_000))
def test_random_regexes_real_tokenizer(real_tok, pattern, seed):
    explore(compile_regex(pattern, real_tok), seed, walks=2, oracle=False)


# ---- the repo's schemas with the real tokenizer -------------------------------------------------------------

def _check_shortest_document(compiled, schema, seed) -> None:
    """Closing from the start with budget = the initial bound gives a document that validates."""
    cur = compiled.cursor()
    b = cur.min_tokens_to_finish()
    toks = close_within(cur, b, random.Random(seed))
    assert cur.is_final() and len(toks) <= b
    text = compiled.tokenizer.decode(toks) if hasattr(compiled.tokenizer, "decode") else None
    if text is not None:
        jsonschema.validate(json.loads(text), schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.slow
@pytest.mark.parametrize("path", SCHEMAS, ids=[p.stem for p in SCHEMAS])
def test_repo_schema_initial_bound_is_the_shortest_document(real_tok, path):
    schema = json.loads(path.read_text())
    compiled = compile_json_schema(schema, real_tok)
    cur = compiled.cursor()
    b = cur.min_tokens_to_finish()
    shortest = compiled.bounds.completion(cur.state).decode()
    jsonschema.validate(json.loads(shortest), schema, cls=jsonschema.Draft202012Validator)
    assert compiled.accepts(shortest)
    # The bound spells that document greedily (longest token first): about as many tokens as the tokenizer's own
    # encoding of it (measured: invoice 96 vs 98, receipt 43 vs 42), far fewer than its bytes.
    n = len(real_tok.encode(shortest))
    assert len(shortest) // 6 <= b <= n + n // 10
    for seed in range(3):
        _check_shortest_document(compiled, schema, seed)
    rng = random.Random(0)
    for _ in range(3):
        c = random_walk(compiled.cursor(), rng, rng.randrange(30))
        check_state(c, rng, oracle=False)


@pytest.mark.slow
def test_real_tokenizer_has_bytes_without_single_byte_tokens(real_tok):
    from structgen.fsm.vocab import Vocabulary

    spell = Vocabulary.from_tokenizer(real_tok).byte_token_ids
    # Printable ASCII and the UTF-8 continuation bytes all have one; a few control / lead bytes do not.
    assert (spell[0x20:0x7F] >= 0).all() and (spell[0x80:0xC0] >= 0).all()
    missing = np.flatnonzero(spell < 0).tolist()
    assert 0xF1 in missing


@pytest.mark.slow
def test_bytes_no_token_spells_real_tokenizer(real_tok):
    # SmolLM2 has no token holding 0x04 or 0xF1 (the lead byte of U+40000..U+7FFFF): the shortest completion
    # after "a" (the one byte 0x04) cannot be spelled, so the bound comes from the token search through "bcd".
    compiled = compile_regex("a(\x04|[\U00040000-\U00040010]|bcd)", real_tok)
    cur = compiled.cursor()
    assert compiled.bounds.completion(cur.state) == b"a\x04"
    b = cur.min_tokens_to_finish()
    assert 2 <= b <= 3
    toks = close_within(cur, b, random.Random(1))
    assert cur.is_final() and len(toks) <= b and real_tok.decode(toks) == "abcd"
    # Only unspellable ways out: no budget is enough.
    assert compile_regex("[\U00040000-\U00040010]", real_tok).cursor().min_tokens_to_finish() == UNREACHABLE


def test_budget_refusal_names_both_numbers_and_the_smaller_limit():
    from structgen.fsm.budget import budget_refusal

    assert budget_refusal(need=40, max_tokens=64, room=500) is None
    assert budget_refusal(need=40, max_tokens=40, room=40) is None
    assert budget_refusal(need=40, max_tokens=800, room=30) == (
        "the constraint needs at least 40 tokens to complete but the budget is 30 (max_tokens=800, context room=30)")


def test_budget_refusal_of_a_constraint_the_tokenizer_cannot_complete_says_so():
    from structgen.fsm.budget import UNREACHABLE, budget_refusal

    msg = budget_refusal(need=UNREACHABLE, max_tokens=1024, room=8000)
    assert "cannot be completed with this model's tokenizer" in msg
    assert str(UNREACHABLE) not in msg


# ---- far states: completions longer than FAR_BYTES ---------------------------------------------------------------

def test_a_huge_minimum_is_refused_by_the_budget_rule_at_once(real_tok):
    import time

    from structgen.fsm.budget import budget_refusal

    t = time.monotonic()
    c = compile_json_schema({"type": "string", "minLength": 10**9}, real_tok)
    need = c.cursor().min_tokens_to_finish()
    assert need >= 10**9 // real_tok_max_len(real_tok)  # no output this long fits any budget
    assert budget_refusal(need, max_tokens=8192, room=8192) is not None
    arr = compile_json_schema({"type": "array", "minItems": 10**7}, real_tok).cursor().min_tokens_to_finish()
    assert arr >= 10**7
    assert time.monotonic() - t < 5.0


def real_tok_max_len(tok) -> int:
    from structgen.fsm.vocab import Vocabulary

    return Vocabulary.from_tokenizer(tok).max_token_len


def test_far_bounds_are_safe_and_consistent(real_tok):
    from structgen.fsm.budget import FAR_BYTES

    n = FAR_BYTES + 100
    c = compile_json_schema({"type": "string", "minLength": n}, real_tok)
    cur = c.cursor()
    assert cur.min_tokens_to_finish() == n + 2  # one token per byte: loose, but enough
    for tok in (c.encode('"')[0], c.encode("  ")[0]):
        assert cur.advance(tok)
        b = cur.min_tokens_to_finish()
        _, bounds = c.bounds.successor_bounds(cur.state)
        assert 1 + int(bounds[0]) <= b, "no allowed token lowers the bound"
    # near the end the bound is the greedy count again: far fewer tokens than bytes
    near = compile_json_schema({"type": "string", "minLength": FAR_BYTES - 100}, real_tok).cursor()
    assert near.min_tokens_to_finish() < (FAR_BYTES - 100) // 8


def test_a_far_state_no_single_token_can_lower_is_an_error_not_a_wrong_bound():
    from structgen.errors import ConstraintTooComplexError
    from structgen.fsm.budget import FAR_BYTES

    # _GAPPY spells no "b" alone (nor "bb" at all): inside the string no far bound holds. The check runs where the
    # bound is asked for, so the request that reaches such a state fails with a clear error there.
    c = compile_json_schema({"type": "string", "pattern": "^b+$", "minLength": FAR_BYTES + 10}, _GAPPY)
    cur = c.cursor()
    assert cur.advance(c.encode('"')[0])
    with pytest.raises(ConstraintTooComplexError, match="no single token spells"):
        cur.min_tokens_to_finish()
