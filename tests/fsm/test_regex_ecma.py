"""JSON Schema's regex dialect (structgen/fsm/regex_syntax.py, regex_compile.py): ECMA-262 judged with Python's re.

Every check is against the oracles themselves: Python's `re.search` (what jsonschema validates with) always, and
ECMA-262 through Node.js's RegExp where `node` is installed. The invariant: a string the automaton accepts is accepted
by both. Over `AGREE` (printable ASCII and tab, where the two dialects read every construct here the same way) the
automaton must accept exactly what `re.search` does, so narrowing is confined to the documented characters."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import warnings

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from automaton_helpers import accepts, data_dir
from structgen.errors import ConstraintTooComplexError, InvalidRegexError
from structgen.fsm.regex import CharDFA, RegexAutomaton, regex_automaton
from structgen.fsm.regex_syntax import ECMA_SPACE, PYTHON_SPACE, python_digits, region_of, DIGIT, WORD

AGREE = "".join(chr(c) for c in range(0x20, 0x7F)) + "\t"
# Characters the two dialects treat differently, or that only some classes name.
WIDE = "\n\r\x0b\x0c\x1c\x85\xa0\u2028\u2029\ufeff\u3000\u00e9\u00df\u00c4\u4e2d\U0001F600\u0663\u0301_"
NODE_SCRIPT = r"""
const rl = require('readline').createInterface({input: process.stdin});
rl.on('line', (line) => {
  const {p, s} = JSON.parse(line);
  let re = null;
  for (const flags of ['u', '']) { try { re = new RegExp(p, flags); break; } catch (e) {} }
  console.log(re === null ? 'null' : JSON.stringify(s.map(x => re.test(x))));
});
"""


class Ecma:
    """ECMA-262's RegExp.test through one Node.js process: the `u` flag (what JSON Schema asks for), or none where the
    pattern is a syntax error with it (e.g. `\\-` outside a class, which Python reads as '-')."""

    def __init__(self):
        self.proc = subprocess.Popen(["node", "-e", NODE_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, encoding="utf-8")

    def test(self, pattern: str, strings: list[str]) -> list[bool] | None:
        self.proc.stdin.write(json.dumps({"p": pattern, "s": strings}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ecma():
    if shutil.which("node") is None:
        pytest.skip("node (the ECMA-262 oracle) is not installed")
    e = Ecma()
    yield e
    e.close()


def search_automaton(pattern: str) -> RegexAutomaton:
    """The byte automaton of JSON Schema `pattern` semantics: texts containing a match."""
    return RegexAutomaton(CharDFA.from_pattern(pattern, search=True))


def dialects_agree(pattern: str, text: str) -> bool:
    """Whether ECMA-262 and Python read `pattern` on `text` (over AGREE) the same way: all but `\\B` in an empty text,
    which Python never matches and ECMA does."""
    return text != "" or "\\B" not in pattern


def py_search(pattern: str, text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.search(pattern, text) is not None


def near_misses(samples: list[str], rng: random.Random, n: int) -> list[str]:
    """Strings a few edits away from `samples` (and a few random ones)."""
    pool = AGREE + WIDE
    out = []
    for _ in range(n):
        t = list(rng.choice(samples)) if samples else []
        for _ in range(rng.randint(1, 3)):
            i = rng.randint(0, len(t))
            op = rng.randint(0, 2)
            if op == 0 or not t:
                t.insert(i, rng.choice(pool))
            elif op == 1:
                del t[min(i, len(t) - 1)]
            else:
                t[min(i, len(t) - 1)] = rng.choice(pool)
        out.append("".join(t))
    out += ["".join(rng.choice(pool) for _ in range(rng.randint(0, 8))) for _ in range(n // 4)]
    return out


def draw(dfa: CharDFA, rng: random.Random, max_chars: int = 40) -> str:
    """A random string the DFA accepts: a walk choosing uniformly among the symbols (not bytes: a class of one
    character weighs as much as the padding) and a character of the symbol, finished along a shortest path."""
    rows = dfa.rows()
    named: dict = {}
    for cp in dfa.explicit_code_points:
        named.setdefault(dfa.symbol_of(cp), []).append(cp)
    others = [ord(c) for c in AGREE + WIDE + "\u4e01" if dfa.symbol_of(ord(c)) == dfa.else_symbol]

    def char(sym) -> str:
        return chr(rng.choice(named.get(sym) or others))

    s, out = dfa.initial, []
    while len(out) < max_chars and rows[s] and not (s in dfa.finals and rng.random() < 0.25):
        sym = rng.choice(sorted(rows[s], key=repr))
        out.append(char(sym))
        s = rows[s][sym]
    parents = {s: None}
    todo = [s]
    while s not in dfa.finals:  # breadth-first to the nearest final state (every state of a CharDFA has one)
        nxt = []
        for q in todo:
            for sym, t in rows[q].items():
                if t not in parents:
                    parents[t] = (q, sym)
                    nxt.append(t)
        todo = nxt
        s = next((q for q in todo if q in dfa.finals), s)
    tail = []
    while parents[s] is not None:
        s, sym = parents[s]
        tail.append(char(sym))
    return "".join(out) + "".join(reversed(tail))


def probe(pattern: str, seed, walks: int = 25, misses: int = 40, dfa: CharDFA | None = None):
    """(automaton, strings drawn from it, near misses, random strings over AGREE)."""
    dfa = dfa or CharDFA.from_pattern(pattern, search=True)
    a = RegexAutomaton(dfa)
    rng = random.Random(seed)
    drawn = [] if dfa.is_empty else [draw(dfa, rng) for _ in range(walks)]  # `a^` matches nothing
    agree = ["".join(rng.choice(AGREE) for _ in range(rng.randint(0, 10))) for _ in range(misses)]
    agree += ["".join(c for c in t if c in AGREE) for t in drawn]
    return a, drawn, near_misses(drawn, rng, misses), agree


def check_against_python(pattern: str, seed=0, **probing) -> list[str]:
    """Asserts the invariant and exactness over AGREE; returns the strings checked (for the ECMA test)."""
    a, drawn, misses, agree = probe(pattern, seed, **probing)
    for t in drawn:
        assert py_search(pattern, t), f"{pattern!r}: drew {t!r}, which re.search rejects"
    for t in misses:
        if accepts(a, t):
            assert py_search(pattern, t), f"{pattern!r} accepted {t!r}, which re.search rejects"
    for t in agree:
        if dialects_agree(pattern, t):
            assert accepts(a, t) == py_search(pattern, t), f"{pattern!r} on {t!r}: not what re.search says"
        elif accepts(a, t):
            assert py_search(pattern, t), f"{pattern!r} accepted {t!r}, which re.search rejects"
    return drawn + misses + agree


def check_against_ecma(ecma: Ecma, pattern: str, strings: list[str], a: RegexAutomaton) -> None:
    verdicts = ecma.test(pattern, strings)
    assert verdicts is not None, f"{pattern!r} compiled here but is no ECMA-262 regex"
    for t, ok in zip(strings, verdicts):
        if accepts(a, t):
            assert ok, f"{pattern!r} accepted {t!r}, which ECMA-262 rejects"


# ------------------------------------------------------------------------------------------ constructs
CONSTRUCTS = [
    # shorthands and classes
    r"\d+", r"\D", r"\w+", r"\W", r"\s", r"\S+", r"[\s\S]", r"[\w\W]x", r"[^\d]", r"[^\s-]+", r"[^\w.]",
    r"[\d\s]", r"[a-f\d]{2}", r"[^a-c]", r"[-a]", r"[a-]", r"[\]\[]", r"[\\/]", r"[.*+?]", r"[\x41-\x43]",
    r".", r"a.c", r"(?s).", r"[\u00e9\u4e2d]", r"\u00e9", r"\x41", r"\0", r"\/", r"\.", r"\-", r"\t", r"[\b]",
    # counts
    r"a{2}", r"a{2,}", r"a{1,3}b", r"(ab){0,2}$", r"x{0}y", r"a{", r"a{1,2", r"a{}", r"a+?", r"a{2,3}?",
    # anchors anywhere
    r"^abc$", r"^a|b$", r"^$", r"$^", r"^$|^\d+$", r"(^|,)x", r"x($|,)", r"(^a|b)c", r"^(a|b$)", r"(a|$)b",
    r"^(\/?(\.{2}|[a-z]*)($|\/))*$", r"(^[^5]*$)|7", r"^BYTES|^KB|^MB", r"a^", r"$a", r"(^)*a", r"(a$)+",
    r"^^a$$", r"\Aa\Z", r"(?:^|\b)x",
    # groups
    r"(?:ab)+", r"(?P<name>a)b", r"(a(b(c)))", r"(?i)Hello", r"(?i:ab)c", r"a(?#comment)*",
    # lookaheads
    r"^(?!ab)", r"^(?!ab)\w+$", r"^(?=.*\d)(?=.*[A-Z]).{4,}$", r"^(?!^a|b)", r"(?!a)b", r"a(?=b)", r"a(?!b)",
    r"^(?=a)(?!ab).*", r"x(?=y|z$)", r"^(?!.*://).*$", r"(?=(?!a)b)", r"((?=a)|b)c", r"^(?!\d+$)[\w]+$",
    r"^(?!io\.)([a-z]+\.)*[a-z]+$", r"(?!\s)",
    # word boundaries
    r"\bfoo\b", r"\Bo", r"a\b", r"\b", r"\B", r"x\b-", r"^\bx", r"a\B\w", r"(\bx|y\b)",
]


@pytest.mark.parametrize("pattern", CONSTRUCTS)
def test_construct_agrees_with_python(pattern):
    check_against_python(pattern, seed=pattern)


PYTHON_ONLY = {r"(?s).", r"\Aa\Z", r"(?P<name>a)b", r"(?i)Hello", r"(?i:ab)c", r"a(?#comment)*"}  # no ECMA-262 syntax


@pytest.mark.parametrize("pattern", [p for p in CONSTRUCTS if p not in PYTHON_ONLY])
def test_construct_within_ecma(pattern, ecma):
    strings = probe(pattern, pattern)
    check_against_ecma(ecma, pattern, strings[1] + strings[2] + strings[3], strings[0])


# Decisions where the dialects disagree (or a bound is rounded), each as (pattern, text, accepted).
DECISIONS = [
    (r"^a$", "a\n", False),  # Python's $ also matches before a final newline, ECMA's does not
    (r"^.$", "\r", False), (r"^.$", "\u2028", False), (r"^.$", "\x85", True), (r"(?s)^.$", "\n", True),
    (r"^\s$", "\u00a0", True), (r"^\s$", "\u3000", True), (r"^\s$", "\ufeff", False), (r"^\s$", "\x1c", False),
    (r"^\s$", "\x85", False),
    (r"^\S$", "\ufeff", False), (r"^\S$", "\x85", False), (r"^\S$", "\u00e9", True), (r"^\S$", "\U0001F600", True),
    (r"^\d$", "\u0663", False), (r"^\D$", "\u0663", False), (r"^\D$", "a", True), (r"^\D$", "1", False),
    (r"^\w$", "\u00e9", False), (r"^\W$", "\u00e9", False), (r"^\W$", "-", True), (r"^\W$", "\x00", True),
    (r"^[^\d]$", "\u00e9", False), (r"^[^\s]$", "\u00e9", True),
    (r"x\b", "x\u00e9", False), (r"x\b", "x-", True), (r"x\b", "x", True), (r"\bx", "\u00e9x", False),
    (r"$^", "", True), (r"$^", "a", False), (r"(a|$)b", "b", False), (r"x(?=y|z$)", "xz", True),
    (r"x(?=y|z$)", "xza", False), (r"(?i)^k$", "K", True), (r"(?i)^\u00e9$", "\u00c9", True),
]


@pytest.mark.parametrize("pattern,text,accepted", DECISIONS)
def test_dialect_decisions(pattern, text, accepted):
    assert accepts(search_automaton(pattern), text) == accepted
    if accepted:
        assert py_search(pattern, text)


@pytest.mark.parametrize("pattern,text,accepted", [d for d in DECISIONS if d[2] and "(?" not in d[0]])
def test_dialect_decisions_within_ecma(pattern, text, accepted, ecma):
    assert ecma.test(pattern, [text]) == [True]


def test_space_and_digit_tables_are_pythons_own():
    every = "".join(map(chr, range(0x110000)))
    assert frozenset(re.findall(r"\s", every)) == PYTHON_SPACE.chars
    assert frozenset(re.findall(r"\d", every)) == python_digits()
    assert all(region_of(c) == DIGIT for c in "09\u0663") and region_of("\u00e9") == WORD


def test_ecma_space_table(ecma):
    candidates = [chr(c) for c in range(0x3100)] + ["\ufeff"]
    verdicts = ecma.test(r"^\s$", candidates)
    assert frozenset(c for c, ok in zip(candidates, verdicts) if ok) == ECMA_SPACE.chars


REFUSED = [
    (r"(a)\1", 3, "backreference"), (r"(?P<a>x)(?P=a)", 8, "backreference"), (r"(a)(?(1)b|c)", 3, "conditional"),
    (r"a(?<=a)b", 1, "lookbehind"), (r"a(?<!a)b", 1, "lookbehind"), (r"(?:a(?=b))*", 4, "outside repetitions"),
    (r"(\bx)+", 1, "outside repetitions"), (r"[]a]", 0, "different things"), (r"[^]a]", 0, "different things"),
    (r"a{,3}", 1, "literal text in ECMA"), (r"a*+", 2, "possessive"), (r"(?>a)", 0, "atomic"),
    (r"(?m)^a", 0, "multiline"), (r"(?x)a b", 0, "verbose"), (r"\p{L}", 0, "Python's re"), (r"\cA", 0, "Python's re"),
    (r"(?<n>a)", 1, "Python's re"), (r"(?i)[^a]", 4, "negated class"), (r"(?!(?i:a))", 7, "case-insensitive"),
    (r"(?!a$b)", 4, "'$' followed"),
]


@pytest.mark.parametrize("pattern,position,fragment", REFUSED)
def test_refused_with_position(pattern, position, fragment):
    with pytest.raises(InvalidRegexError) as e:
        search_automaton(pattern)
    assert e.value.position == position
    if fragment is not None:
        assert fragment in str(e.value)


def test_full_match_of_assertions():
    """regex_automaton is a full match: a lookahead sees the rest of the whole text."""
    assert accepts(regex_automaton(r"(?=\w*\d)\w+"), "ab1") and not accepts(regex_automaton(r"(?=\w*\d)\w+"), "ab")
    assert accepts(regex_automaton(r"a\b-b"), "a-b") and not accepts(regex_automaton(r"a\b-b"), "a-")
    for empty in (r"a(?=b)", r"a\bb", r"a$b", r"a^"):
        with pytest.raises(InvalidRegexError, match="matches no string"):
            regex_automaton(empty)


# ------------------------------------------------------------------------------------------- random patterns
_ATOMS = st.sampled_from(["a", "b", "1", "-", " ", r"\.", ".", "[ab]", "[^a]", "[a-c1]", r"\d", r"\w", r"\s", r"\D",
                          r"\W", r"\S", r"[\s\S]", r"[^\s-]", r"[^\w]", r"\x61", "(a|b1)", "(?:ab|)"])
_QUANTIFIERS = st.sampled_from(["", "", "", "*", "+", "?", "{2}", "{0,2}", "+?"])


@st.composite
def ecma_patterns(draw, depth: int = 0, in_repeat: bool = False):
    """Small patterns mixing classes, anchors anywhere, word boundaries and lookaheads (these two only where they are
    supported: outside repetitions)."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["atom"] * 5 + ["anchor", "boundary", "group", "look"]))
        if kind == "anchor":
            x = draw(st.sampled_from(["^", "$"]))
        elif kind == "boundary" and not in_repeat:
            x = draw(st.sampled_from([r"\b", r"\B"]))
        elif kind == "look" and not in_repeat and depth < 2:
            x = draw(st.sampled_from(["(?=", "(?!"])) + draw(ecma_patterns(depth + 1)) + ")"
        elif kind == "group" and depth < 2:
            q = draw(_QUANTIFIERS)
            x = "(" + draw(ecma_patterns(depth + 1, in_repeat or bool(q))) + ")" + q
        else:
            x = draw(_ATOMS) + draw(_QUANTIFIERS)
        parts.append(x)
    return ("|" if draw(st.integers(0, 3)) == 0 else "").join(parts)


def _compiles(pattern: str):
    try:
        return search_automaton(pattern)
    except InvalidRegexError as e:
        # the documented refusals a random pattern may hit
        assert "outside repetitions" in str(e) or "'$' followed" in str(e), str(e)
        return None


@settings(max_examples=200, deadline=None, derandomize=True)
@given(pattern=ecma_patterns(), seed=st.integers(0, 10_000))
def test_random_patterns_agree_with_python(pattern, seed):
    a = _compiles(pattern)
    assume(a is not None)
    rng = random.Random(seed)
    for _ in range(60):
        t = "".join(rng.choice("ab1- .") for _ in range(rng.randint(0, 7)))
        if dialects_agree(pattern, t):
            assert accepts(a, t) == py_search(pattern, t), (pattern, t)
    for _ in range(40):
        t = "".join(rng.choice("ab1- ." + WIDE) for _ in range(rng.randint(0, 6)))
        if accepts(a, t):
            assert py_search(pattern, t), (pattern, t)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(pattern=ecma_patterns(), seed=st.integers(0, 10_000))
def test_random_patterns_within_ecma(pattern, seed, ecma):
    a = _compiles(pattern)
    assume(a is not None)
    rng = random.Random(seed)
    strings = ["".join(rng.choice("ab1- ." + WIDE) for _ in range(rng.randint(0, 6))) for _ in range(60)]
    check_against_ecma(ecma, pattern, strings, a)


# ------------------------------------------------------------------------------------------- the shared data
def shared_patterns() -> list[str]:
    """Every `pattern` and `patternProperties` regex of the jsonschemabench dev set and the official suite."""
    root = data_dir()
    out: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "pattern" and isinstance(v, str):
                    out.add(v)
                elif k == "patternProperties" and isinstance(v, dict):
                    out.update(v)
                if k not in ("const", "enum", "examples", "default"):
                    walk(v)
        elif isinstance(node, list):
            for x in node:
                walk(x)

    for f in sorted((root / "jsonschemabench" / "dev").glob("*/*.json")):
        walk(json.loads(f.read_text()).get("schema"))
    for f in sorted((root / "json-schema-test-suite" / "draft2020-12").glob("**/*.json")):
        for group in json.loads(f.read_text()):
            walk(group.get("schema"))
    return sorted(out)


# What a real pattern may still be refused for: syntax Python's re rejects (so no validator here could check it), a
# lookahead inside a repetition, or a size limit.
DOCUMENTED_REFUSALS = ("Python's re", "outside repetitions")


def _compile_shared(shared_data):
    compiled, refused = {}, {}
    for p in shared_patterns():
        try:
            compiled[p] = CharDFA.from_pattern(p, search=True)
        except InvalidRegexError as e:
            refused[p] = str(e)
        except ConstraintTooComplexError as e:
            refused[p] = f"too complex: {e}"
    return compiled, refused


@pytest.fixture(scope="module")
def shared_compiled(request):
    d = data_dir()
    if not (d / "jsonschemabench" / "dev").is_dir():
        pytest.skip(f"shared test data not found at {d} (set STRUCTGEN_DATA_DIR)")
    return _compile_shared(d)


def test_shared_patterns_compile_or_are_refused_for_documented_reasons(shared_compiled):
    compiled, refused = shared_compiled
    assert compiled
    for p, why in refused.items():
        assert why.startswith("too complex") or any(r in why for r in DOCUMENTED_REFUSALS), (p, why)
    assert len(refused) <= len(compiled) // 100, refused  # at most 1% of real patterns refused


def test_shared_patterns_agree_with_python(shared_compiled):
    compiled, _ = shared_compiled
    for p, dfa in compiled.items():
        check_against_python(p, seed=p, walks=15, misses=25, dfa=dfa)


def test_shared_patterns_within_ecma(shared_compiled, ecma):
    compiled, _ = shared_compiled
    for p, dfa in compiled.items():
        a, drawn, misses, agree = probe(p, p, walks=15, misses=25, dfa=dfa)
        check_against_ecma(ecma, p, drawn + misses + agree, a)
