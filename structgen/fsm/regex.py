"""Regex and choice constraints as byte automata, and the char-level DFA that JSON string leaves reuse.

Regex dialect: JSON Schema's ECMA-262 (with the `u` flag, as the spec asks), judged together with Python's `re`, which
validators (jsonschema) match with: a pattern must compile in Python's re, and where the two dialects differ the
automaton accepts only what *both* accept. structgen.fsm.regex_syntax parses, structgen.fsm.regex_compile builds the
language, structgen.fsm.regex_dfa determinizes. Supported:
- literals and escapes: `\\n \\t \\r \\f \\v \\0`, `\\xHH`, `\\uHHHH`, escaped punctuation (`\\/ \\. \\-`), and
  Python's `\\a \\UHHHHHHHH \\N{name}` and octal escapes;
- classes `[a-z]`, `[^...]` with escapes, ranges and shorthands inside; `.` is any character but a line terminator
  (`\\n`, and ECMA's `\\r \\u2028 \\u2029` too);
- shorthands, each the set both dialects agree on: `\\d` = [0-9], `\\w` = [A-Za-z0-9_] (ECMA's ASCII sets, which
  Python's Unicode ones contain), `\\s` = the whitespace both count (ECMA's list less U+FEFF; not Python's extra
  U+001C-U+001F, U+0085), `\\S` = the characters neither counts as whitespace; `\\D`, `\\W` and negated classes
  holding `\\d` or `\\w` match, outside their set, only ASCII characters (the exact set would list most of Unicode);
- groups `(...)`, `(?:...)`, `(?P<name>...)`, alternation, quantifiers `* + ? {m} {m,} {m,n}` (lazy too);
- anchors `^ $` (and `\\A \\Z`) anywhere: in alternations (`^a|b$`), groups, repetitions; `$` is the very end
  (Python's also matches before a final newline: not taken);
- lookaheads `(?=...)` / `(?!...)` and word boundaries `\\b` / `\\B` outside repetitions (in groups and
  alternations too), compiled away by intersecting / subtracting regular languages; a boundary next to a non-ASCII
  character is not taken (the dialects disagree on which are word characters);
- Python's flags `(?i)` (case variants re itself confirms; not on negated classes or inside a negative lookahead)
  and `(?s)`.
Refused with InvalidRegexError (and its position): backreferences, conditionals, lookbehind, lookaheads or `\\b` inside
a repetition, possessive quantifiers and atomic groups, the flags `m x a L`, `{,n}`, `[]...]` / `[^]...]` (read
differently by the two dialects), and what Python's re rejects, ECMA-only syntax included (`\\p{...}`, `\\cX`,
`(?<name>...)`): a validator using re could not check any instance against it.

`regex_automaton(pattern)` matches the whole text (full match). Characters are read as UTF-8 bytes, one
byte per transition; a multi-byte character is accepted byte by byte only while some completion of it is a
valid character the DFA can take (the token layer walks byte-level BPE tokens that split characters).
"""

from __future__ import annotations

import bisect
import re
import warnings
from functools import lru_cache

from ..errors import ConstraintTooComplexError, InvalidRegexError
from . import regex_compile, regex_dfa, regex_syntax
from .automaton import LiteralSetAutomaton, State

MAX_CODE_POINT = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)
# Code point range a UTF-8 sequence of each length may encode (shorter encodings are overlong).
_UTF8_SPAN = {2: (0x80, 0x7FF), 3: (0x800, 0xFFFF), 4: (0x10000, MAX_CODE_POINT)}


# ----------------------------------------------------------------------------------------------- UTF-8
def utf8_sequence_length(lead: int) -> int:
    """Total bytes of the sequence a lead byte starts (0 = not a lead byte of a multi-byte sequence)."""
    if 0xC0 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF7:
        return 4
    return 0


@lru_cache(maxsize=1 << 16)
def utf8_prefix_range(prefix: bytes) -> tuple[int, int] | None:
    """Code points [lo, hi] that complete the partial multi-byte sequence `prefix`; None if it cannot be
    completed to valid UTF-8 (overlong forms, surrogates and > U+10FFFF are excluded)."""
    n = utf8_sequence_length(prefix[0])
    if n == 0 or len(prefix) >= n + 1:
        return None
    bits = prefix[0] & (0x7F >> n)
    for b in prefix[1:]:
        if not 0x80 <= b <= 0xBF:
            return None
        bits = (bits << 6) | (b & 0x3F)
    rest = n - len(prefix)
    lo, hi = bits << (6 * rest), (bits << (6 * rest)) | ((1 << (6 * rest)) - 1)
    span_lo, span_hi = _UTF8_SPAN[n]
    lo, hi = max(lo, span_lo), min(hi, span_hi)
    if lo <= _SURROGATES[1] and hi >= _SURROGATES[0]:
        # NOTE: within one prefix the surrogate block is only ever at one end of the range.
        if lo >= _SURROGATES[0]:
            lo = _SURROGATES[1] + 1
        else:
            hi = _SURROGATES[0] - 1
    return (lo, hi) if lo <= hi else None


def _second_byte_span(lead: int) -> tuple[int, int]:
    """The continuation bytes valid right after `lead` (tighter after E0/ED/F0/F4: no overlong forms,
    surrogates or code points past U+10FFFF)."""
    return {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(lead, (0x80, 0xBF))


# Valid lead bytes of multi-byte sequences -> (code point range, continuation bytes still to come,
# span of the next byte).
LEAD_BYTES = {b: (utf8_prefix_range(bytes([b])), utf8_sequence_length(b) - 1, _second_byte_span(b))
              for b in range(0xC2, 0xF5)}


# ------------------------------------------------------------------------------------------ parsing
def parse_char_fsm(pattern: str, *, search: bool = False, deadline: float | None = None):
    """Parse `pattern` into a character DFA (structgen.fsm.regex_dfa.CharFSM).

    search=False: full match. search=True: JSON Schema's `pattern`, Python `re.search` semantics (anchors where they
    stand, unanchored ends padded with any characters). Returns (fsm, False): the second item, once "the else symbol
    stands for printable ASCII only", is always False now that every class is exact (kept for callers).
    Raises InvalidRegexError (with position where known) for bad or unsupported syntax, ConstraintTooComplexError for
    a pattern past the size limits of structgen.fsm.regex_dfa (checked before the expensive work), or one whose
    automaton takes more work than they allow or runs past `deadline` (time.monotonic()).
    """
    if not isinstance(pattern, str):
        raise TypeError(f"a regex pattern must be a str, not {type(pattern).__name__}")
    what = f"regex {_excerpt(pattern)}"
    if len(pattern) > regex_dfa.MAX_PATTERN_CHARS:
        raise ConstraintTooComplexError(f"{what}: characters in the pattern", regex_dfa.MAX_PATTERN_CHARS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # re's "possible nested set": the user's pattern, not ours
            re.compile(pattern)
    except re.error as e:
        # NOTE: also ECMA-only syntax (\\p{...}, \\cX, (?<name>...)): jsonschema validates with Python's re, which
        # raises on such a pattern, so no instance could pass
        raise InvalidRegexError(pattern, e.pos, f"{e.msg} (Python's re, which validators use, rejects it)") from None
    except OverflowError as e:  # a repetition count past re's own limit (2**32 - 1)
        raise InvalidRegexError(pattern, None, str(e)) from None
    except RecursionError:
        raise ConstraintTooComplexError(f"{what}: nesting depth of groups", regex_dfa.MAX_NESTING) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        regex_dfa.precheck(pattern, what)
    tree = regex_syntax.parse(pattern)
    fsm = regex_compile.compile_tree(tree, pattern, search=search, budget=regex_dfa.Budget(what, deadline))
    return fsm, False


def _excerpt(pattern: str, width: int = 40) -> str:
    """The pattern as a repr, cut to `width` characters (error messages name it; a pattern may be huge)."""
    return repr(pattern) if len(pattern) <= width else repr(pattern[:width]) + f"... ({len(pattern)} chars)"


# ---------------------------------------------------------------------------------------- char DFA
class CharDFA:
    """A deterministic automaton over Unicode code points, trimmed to states that can still reach a final
    state, with queries over code-point *ranges* (what a partial UTF-8 sequence or `\\u` escape can become).

    States are small ints. `step` returns None for a dead move. Built once per leaf; immutable afterwards
    (the caches only memoize pure functions).
    """

    def __init__(self, fsm: regex_dfa.CharFSM, *, ascii_only_else: bool = False):
        self._else_symbol = fsm.else_symbol
        self._ascii_only_else = ascii_only_else
        pairs = sorted((ord(c), s) for c, s in fsm.symbol_of.items())
        self._explicit_cps = [cp for cp, _ in pairs]
        self._explicit_syms = [s for _, s in pairs]
        finals = set(fsm.finals)
        reverse: dict = {}
        for s, row in enumerate(fsm.map):
            for t in row.values():
                reverse.setdefault(t, set()).add(s)
        live = set(finals)
        todo = list(finals)
        while todo:
            t = todo.pop()
            for s in reverse.get(t, ()):
                if s not in live:
                    live.add(s)
                    todo.append(s)
        self.is_empty = fsm.initial not in live
        # Renumber live states 0..n-1 (initial = 0) so states are compact, hashable ints.
        order = [fsm.initial] + sorted(s for s in live if s != fsm.initial)
        number = {s: i for i, s in enumerate(order)}
        self.initial = 0
        self.num_states = len(order)
        self.finals = frozenset(number[s] for s in finals if s in live)
        self._map = [
            {sym: number[t] for sym, t in fsm.map[s].items() if t in live} for s in order
        ]
        self._range_cache: dict = {}
        self._next_cache: dict = {}
        self._ascii_rows: dict = {}
        self.derived: dict = {}  # memo of pure functions of this DFA that other modules build (see json_schema.lengths)

    @classmethod
    def anything(cls) -> "CharDFA":
        fsm, _ = parse_char_fsm(r"[\s\S]*")
        return cls(fsm, ascii_only_else=False)

    @classmethod
    def from_pattern(cls, pattern: str, *, search: bool, deadline: float | None = None) -> "CharDFA":
        fsm, ascii_only_else = parse_char_fsm(pattern, search=search, deadline=deadline)
        return cls(fsm, ascii_only_else=ascii_only_else)

    @classmethod
    def from_fsm(cls, fsm: regex_dfa.CharFSM, ascii_only_else: bool) -> "CharDFA":
        return cls(fsm, ascii_only_else=ascii_only_else)

    @property
    def explicit_code_points(self) -> list[int]:
        """The code points the pattern names (sorted); every other one reads as `else_symbol`."""
        return self._explicit_cps

    @property
    def ascii_only_else(self) -> bool:
        """True when `else_symbol` stands only for printable ASCII (see the module docstring)."""
        return self._ascii_only_else

    def rows(self) -> list[dict]:
        """state -> {symbol: next state} (read-only view of the trimmed DFA)."""
        return self._map

    def symbol_of(self, cp: int):
        """The symbol code point `cp` reads as (None: refused outright)."""
        return self._symbol(cp)

    def _symbol(self, cp: int):
        i = bisect.bisect_left(self._explicit_cps, cp)
        if i < len(self._explicit_cps) and self._explicit_cps[i] == cp:
            return self._explicit_syms[i]
        if self._ascii_only_else and not 0x20 <= cp <= 0x7E:
            return None
        return self._else_symbol

    def step(self, state: int, cp: int) -> int | None:
        sym = self._symbol(cp)
        return None if sym is None else self._map[state].get(sym)

    def ascii_row(self, state: int) -> tuple:
        """Next state (or None) for each code point 0..127 from `state`."""
        row = self._ascii_rows.get(state)
        if row is None:
            row = self._ascii_rows[state] = tuple(self.step(state, cp) for cp in range(128))
        return row

    def uniform_symbol(self, lo: int, hi: int):
        """The one symbol every code point in [lo, hi] maps to, or None if they differ or some is refused."""
        i = bisect.bisect_left(self._explicit_cps, lo)
        j = bisect.bisect_right(self._explicit_cps, hi)
        if i != j or self._else_symbol is None or (self._ascii_only_else and not (0x20 <= lo and hi <= 0x7E)):
            return None
        return self._else_symbol

    @property
    def else_symbol(self):
        """The symbol of every code point the pattern does not name (None if there is none)."""
        return self._else_symbol

    def step_symbol(self, state: int, symbol) -> int | None:
        return self._map[state].get(symbol)

    def symbols_in_range(self, lo: int, hi: int) -> frozenset:
        key = (lo, hi)
        hit = self._range_cache.get(key)
        if hit is not None:
            return hit
        i = bisect.bisect_left(self._explicit_cps, lo)
        j = bisect.bisect_right(self._explicit_cps, hi)
        syms = set(self._explicit_syms[i:j])
        if self._else_symbol is not None and (j - i) < (hi - lo + 1):
            if not self._ascii_only_else:
                syms.add(self._else_symbol)
            else:
                a, b = max(lo, 0x20), min(hi, 0x7E)
                explicit_ascii = bisect.bisect_right(self._explicit_cps, b) - bisect.bisect_left(self._explicit_cps, a)
                if a <= b and explicit_ascii < (b - a + 1):
                    syms.add(self._else_symbol)
        out = frozenset(syms)
        if len(self._range_cache) < 100_000:
            self._range_cache[key] = out
        return out

    def next_states_in_range(self, state: int, lo: int, hi: int) -> frozenset[int]:
        key = (state, lo, hi)
        hit = self._next_cache.get(key)
        if hit is None:
            row = self._map[state]
            hit = frozenset(row[s] for s in self.symbols_in_range(lo, hi) if s in row)
            if len(self._next_cache) < 100_000:
                self._next_cache[key] = hit
        return hit


# ------------------------------------------------------------------------------ regex byte automaton
class RegexAutomaton:
    """Full-match byte automaton of a CharDFA over raw UTF-8 text.

    State = (dfa_state, pending): `pending` holds the bytes of a multi-byte character read so far (b"" when
    at a character boundary). Every state returned is productive: the DFA is trimmed to live states and a
    pending prefix is kept only while some completion leads to a live state.
    """

    def __init__(self, dfa: CharDFA):
        self._dfa = dfa
        self._cache: dict = {}

    def initial(self) -> State:
        return (self._dfa.initial, b"")

    def is_final(self, state: State) -> bool:
        return state[1] == b"" and state[0] in self._dfa.finals

    def transitions(self, state: State) -> dict[int, State]:
        hit = self._cache.get(state)
        if hit is not None:
            return hit
        dfa = self._dfa
        s, pending = state
        out: dict[int, State] = {}
        if pending == b"":
            for b in range(0x80):
                t = dfa.step(s, b)
                if t is not None:
                    out[b] = (t, b"")
            candidates = range(0xC2, 0xF5)
        else:
            candidates = range(0x80, 0xC0)
        for b in candidates:
            p = pending + bytes([b])
            rng = utf8_prefix_range(p)
            if rng is None:
                continue
            if len(p) == utf8_sequence_length(p[0]):
                t = dfa.step(s, rng[0])
                if t is not None:
                    out[b] = (t, b"")
            elif dfa.next_states_in_range(s, *rng):
                out[b] = (s, p)
        self._cache[state] = out
        return out


def regex_automaton(pattern: str, *, deadline: float | None = None) -> RegexAutomaton:
    """Byte automaton accepting exactly the UTF-8 encodings of the strings `pattern` fully matches.
    deadline: time.monotonic() past which building its DFA stops (ConstraintTooComplexError); the work limits of
    structgen.fsm.regex_dfa apply either way."""
    dfa = CharDFA.from_pattern(pattern, search=False, deadline=deadline)
    if dfa.is_empty:
        raise InvalidRegexError(pattern, None, "the pattern matches no string")
    return RegexAutomaton(dfa)


def choice_automaton(choices: list[str]) -> LiteralSetAutomaton:
    """Byte automaton accepting exactly one of `choices` (their UTF-8 encodings)."""
    if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)):
        raise TypeError("choices must be a list of strings")
    if not choices:
        raise ValueError("choices must not be empty")
    for c in choices:
        if not isinstance(c, str):
            raise TypeError(f"every choice must be a str, got {type(c).__name__}")
    return LiteralSetAutomaton([c.encode("utf-8") for c in choices])
