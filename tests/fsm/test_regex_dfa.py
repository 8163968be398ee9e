"""structgen/fsm/regex_dfa.py: our determinization of interegular's parse trees is the same language as interegular's
own `to_fsm` (and as Python's `re`), minimal, and bounded: pathological patterns fail fast with
ConstraintTooComplexError instead of running for minutes."""

from __future__ import annotations

import random
import re
import time

import interegular
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from interegular.fsm import anything_else

from structgen.errors import ConstraintTooComplexError, InvalidRegexError
from structgen.fsm import regex_dfa
from structgen.fsm.regex import CharDFA, parse_char_fsm

CORPUS = [
    r"[a-z]+", r"\d{3}-\d{4}", r"(yes|no|maybe)", r"[A-Z][a-z]*( [A-Z][a-z]*)*", r"-?(0|[1-9][0-9]*)(\.[0-9]+)?",
    r"a{2,4}b?c*", r"(ab|a)(bc|c)", r"[^,]+,[^,]+", r"\w+@\w+\.com", r"\s*x\s*", r"[äöü]+ß?", r"(?i)hello",
    r"x(a|b)*?y", r"", r"(a|b)*a(a|b){3}", r"((ab){2,3}|c){0,2}", r".{2,5}", r"[^a-c]?[\s\S]", r"(?:a*)*b",
    r"(a?){3}a{3}", r"(x|xy|xyz)+", "[\u4e00-\u9fff]{1,3}", r"(?s).a", r"0{0,0}1",
]


def interegular_fsm(pattern: str):
    return interegular.parse_pattern(pattern).to_fsm()


def equivalent(theirs, ours: regex_dfa.CharFSM) -> bool:
    """Product walk over every character either names plus one neither does: same finality everywhere."""
    amap = theirs.alphabet._symbol_mapping
    chars = {c for c in amap if c is not anything_else} | set(ours.symbol_of) | {"\U000F0042"}

    def step_a(s, c):
        return None if s is None else theirs.map.get(s, {}).get(amap.get(c, amap.get(anything_else)))

    def step_b(s, c):
        return None if s is None else ours.map[s].get(ours.symbol_of.get(c, ours.else_symbol))

    start = (theirs.initial, ours.initial)
    seen, todo = {start}, [start]
    while todo:
        x, y = todo.pop()
        if (x is not None and x in theirs.finals) != (y is not None and y in ours.finals):
            return False
        for c in chars:
            nxt = (step_a(x, c), step_b(y, c))
            if nxt != (None, None) and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return True


def build(pattern: str) -> regex_dfa.CharFSM:
    return regex_dfa.from_tree(interegular.parse_pattern(pattern), regex_dfa.Budget())


def accepts(fsm: regex_dfa.CharFSM, text: str) -> bool:
    s = fsm.initial
    for c in text:
        s = fsm.map[s].get(fsm.symbol_of.get(c, fsm.else_symbol))
        if s is None:
            return False
    return s in fsm.finals


@pytest.mark.parametrize("pattern", CORPUS)
def test_same_language_as_interegular(pattern):
    assert equivalent(interegular_fsm(pattern), build(pattern))


@pytest.mark.parametrize("pattern", [p for p in CORPUS if "(?" not in p])
def test_agrees_with_python_fullmatch(pattern):
    fsm = build(pattern)
    rng = random.Random(pattern)
    alphabet = "abcxyzAB019 ,.-@\nüäöß中"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
        assert accepts(fsm, text) == (re.fullmatch(pattern, text) is not None), text


def test_minimal():
    # "the 4th character from the end is an a": 2**4 states in the minimal DFA, however it is written.
    assert build(r"(a|b)*a(a|b){3}").num_states == 16
    assert build(r"(a|b)*a(a|b)(a|b)(a|b)").num_states == 16
    assert build(r"a*|a*a*").num_states == 1


_ATOMS = st.sampled_from(["a", "b", "[ab]", "[^a]", ".", "ab", "(a|b)", "(ab|a)", "(a?)", "(b*)", "(a|)"])


@st.composite
def small_patterns(draw, depth: int = 0):
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        x = draw(_ATOMS) if depth >= 1 or draw(st.booleans()) else "(" + draw(small_patterns(depth + 1)) + ")"
        q = draw(st.sampled_from(["", "", "*", "+", "?", "{2}", "{0,2}", "{1,3}", "{2,}"]))
        parts.append(x + q)
    if draw(st.integers(0, 4)) == 0:
        return "|".join(parts)
    return "".join(parts)


# NOTE: one level of groups in groups: deeper nesting of nullable repeats sends Python's backtracking re (the oracle)
# into seconds per string.
@settings(max_examples=150, deadline=None, derandomize=True)
@given(a=small_patterns(), b=small_patterns(), seed=st.integers(0, 1000))
def test_random_patterns_and_intersections_agree_with_python_re(a, b, seed):
    fa, fb = build(a), build(b)
    both = regex_dfa.intersect(fa, fb, regex_dfa.Budget())
    rng = random.Random(seed)
    for _ in range(150):
        text = "".join(rng.choice("abc\n") for _ in range(rng.randint(0, 7)))
        in_a, in_b = re.fullmatch(a, text) is not None, re.fullmatch(b, text) is not None
        assert accepts(fa, text) == in_a, (a, text)
        assert accepts(both, text) == (in_a and in_b), (a, b, text)


# ---- bounded work ------------------------------------------------------------------------------------------------

HOSTILE = [
    ("a?" * 3000 + "a" * 3000, "positions"),  # interegular: minutes (its crawl is quadratic in states)
    ("a?" * 2400 + "a" * 2400, "work"),  # under the position limit: the work limit stops it
    ("(a|b)*a(a|b){20}", "automaton states"),  # 2**21 states in any DFA of it
    ("a{4999}b{10}", "positions"),
    ("(((a{1,100}){1,100}){1,100})", "positions"),  # counts multiply
    ("(?:){100000000}", "pattern size"),  # empty groups still unroll
    ("[\x00-\U0010ffff]", "characters named"),  # interegular would expand it into 1.1M strings
    ("(" * 60 + "a" + ")" * 60, "nesting"),
    ("a" * 100_001, "characters in the pattern"),
]


@pytest.mark.parametrize("pattern,what", HOSTILE, ids=[w for _, w in HOSTILE])
@pytest.mark.parametrize("search", [False, True])
def test_pathological_patterns_fail_fast(pattern, what, search):
    t = time.monotonic()
    with pytest.raises(ConstraintTooComplexError, match=what):
        parse_char_fsm(pattern, search=search)
    assert time.monotonic() - t < 3.0


def test_the_deadline_stops_a_long_build():
    t = time.monotonic()
    with pytest.raises(ConstraintTooComplexError, match="seconds"):
        parse_char_fsm("a?" * 1500 + "a" * 1500, deadline=time.monotonic() + 0.01)
    assert time.monotonic() - t < 1.0


def test_python_re_errors_are_invalid_regex_errors():
    with pytest.raises(InvalidRegexError, match="too large"):
        parse_char_fsm("a{4294967296}")  # re raises OverflowError
    with pytest.raises(ConstraintTooComplexError, match="nesting"):
        parse_char_fsm("(" * 5000 + ")" * 5000)  # re raises RecursionError


def test_large_but_real_patterns_still_compile():
    # the biggest ones in the shared data: thousands of literal positions, 255-character bounds
    alternatives = "|".join(f"{a}x{b}" for a in range(0, 257, 8) for b in range(0, 257 - a, 8))
    for pattern in (rf"^u?fixed({alternatives})?$", r"^[a-zA-Z0-9]{1,255}$", r"^(?:\S+\s+){0,199}\S+$"):
        t = time.monotonic()
        dfa = CharDFA.from_pattern(pattern, search=True)
        assert not dfa.is_empty and time.monotonic() - t < 2.0
