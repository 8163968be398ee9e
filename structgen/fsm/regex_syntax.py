"""Regex text -> syntax tree, with every character class given its meaning under both dialects that judge it.

A JSON Schema `pattern` is ECMA-262 (with the `u` flag, as the 2020-12 spec asks), but instances are validated with
Python's `re` (jsonschema's `re.search`). The two differ on some classes: `\\d \\w \\s` are ASCII in ECMA and Unicode in
Python (ECMA's `\\s` is its own Unicode list), `.` excludes `\\r \\u2028 \\u2029` too in ECMA. So a class here holds
its exact set under each dialect (`Meaning`), and the compiler picks their intersection (what both accept) or, inside a
negative lookahead, their union. Python's Unicode classes are kept as whole parts of Unicode (`Regions`): its `\\w`
alone has ~140,000 characters, and `[^\\W\\d]` and friends stay exact until the very end.

The parser follows Python's grammar (the pattern has already passed `re.compile`), refusing with its position what is
not regular (backreferences, conditionals), what the two dialects read differently (`[]...]`, `[^]...]`, `{,n}`),
what ECMA-262 lacks and is not regular to decide (possessive quantifiers, atomic groups) and the flags that change
the grammar (`x`, `m`, `a`, `L`). Python-only syntax whose meaning is clear (`(?i)`, `(?s)`, `(?P<name>...)`, `\\A`,
`\\Z`, `\\U...`, `\\N{...}`, octal escapes) keeps Python's meaning.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InvalidRegexError


# ------------------------------------------------------------------------------------------ character sets
@dataclass(frozen=True)
class CharSet:
    """A finite set of characters, or (negated) the complement of one."""

    chars: frozenset
    negated: bool = False

    def __or__(self, o: "CharSet") -> "CharSet":
        if not self.negated and not o.negated:
            return CharSet(self.chars | o.chars)
        if self.negated and o.negated:
            return CharSet(self.chars & o.chars, True)
        pos, neg = (self, o) if o.negated else (o, self)
        return CharSet(neg.chars - pos.chars, True)

    def __and__(self, o: "CharSet") -> "CharSet":
        return ~(~self | ~o)

    def __invert__(self) -> "CharSet":
        return CharSet(self.chars, not self.negated)

    def keep(self, test) -> "CharSet":
        """The members for which `test(char)` holds (a finite set only)."""
        assert not self.negated
        return CharSet(frozenset(c for c in self.chars if test(c)))

    @property
    def is_empty(self) -> bool:
        return not self.negated and not self.chars


NOTHING = CharSet(frozenset())
EVERYTHING = CharSet(frozenset(), True)
ASCII = CharSet(frozenset(map(chr, range(0x80))))


@lru_cache(maxsize=1 << 16)
def region_of(c: str) -> int:
    """Which part of Unicode `c` is in for Python's re: DIGIT (\\d), WORD (\\w but not \\d) or OTHER."""
    if re.match(r"\d", c):
        return DIGIT
    return WORD if re.match(r"\w", c) else OTHER


DIGIT, WORD, OTHER = range(3)


@lru_cache(maxsize=1)
def python_digits() -> frozenset:
    """Python's Unicode \\d (660 decimal digits), built on first use (~0.15 s): only the exact union with another
    set needs it (a \\d inside a negative lookahead)."""
    return frozenset(c for c in map(chr, range(0x110000)) if c.isdecimal())


@dataclass(frozen=True)
class Regions:
    """A set given on each of three parts of Unicode: Python's \\d, the rest of Python's \\w, everything else.
    Python's Unicode classes are whole parts (\\w is ~140,000 characters, \\d 660), so sets built from them with
    union, intersection and complement stay exact and small until `rounded`."""

    parts: tuple  # (CharSet on DIGIT, on WORD, on OTHER)

    @classmethod
    def of(cls, s: CharSet) -> "Regions":
        return cls((s, s, s))

    def _uniform(self) -> CharSet | None:
        d, w, o = self.parts
        return d if d is w is o else None

    def __or__(self, o: "Regions") -> "Regions":
        a, b = self._uniform(), o._uniform()
        if a is not None and b is not None:  # the common case, kept to one operation
            return Regions.of(a | b)
        return Regions(tuple(x | y for x, y in zip(self.parts, o.parts)))

    def __and__(self, o: "Regions") -> "Regions":
        return Regions(tuple(x & y for x, y in zip(self.parts, o.parts)))

    def __invert__(self) -> "Regions":
        a = self._uniform()
        return Regions.of(~a) if a is not None else Regions(tuple(~x for x in self.parts))

    def rounded(self, up: bool) -> CharSet:
        """The set as one CharSet: exact where each part is finite, or is the same on every part, or on DIGIT;
        a negated part on WORD or OTHER is exact on ASCII, and outside it takes every character (up: a superset) or
        none (down), since the exact set would list most of Unicode."""
        d, w, o = self.parts
        if d is w is o or d == w == o:
            return d
        rest = _part(w, WORD, up) | _part(o, OTHER, up)
        if not d.negated:
            return rest | d.keep(lambda c: region_of(c) == DIGIT)
        if rest.negated:  # only the digits among rest's exclusions can still be added
            return rest | CharSet(frozenset(c for c in rest.chars if region_of(c) == DIGIT and c not in d.chars))
        return rest | CharSet(python_digits() - d.chars)


def _part(s: CharSet, region: int, up: bool) -> CharSet:
    if not s.negated:
        return s.keep(lambda c: region_of(c) == region)
    exact_ascii = (s & ASCII).keep(lambda c: region_of(c) == region)
    return exact_ascii | ~ASCII if up else exact_ascii


def _chars(text: str) -> CharSet:
    return CharSet(frozenset(text))


def _span(lo: int, hi: int) -> frozenset:
    return frozenset(map(chr, range(lo, hi + 1)))


ASCII_DIGITS = _chars("0123456789")
ASCII_WORD = CharSet(_span(0x30, 0x39) | _span(0x41, 0x5A) | _span(0x61, 0x7A) | {"_"})
# ECMA-262 WhiteSpace + LineTerminator (the \\s of every ECMAScript engine).
ECMA_SPACE = _chars("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | CharSet(_span(0x2000, 0x200A))
# What Python's re matches with \\s in a str pattern (str.isspace(); a test checks it against re itself).
PYTHON_SPACE = _chars("\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\u00a0\u1680\u2028\u2029\u202f\u205f\u3000") | \
    CharSet(_span(0x2000, 0x200A))
ECMA_LINE_TERMINATORS = _chars("\n\r\u2028\u2029")
_ALL_PARTS = {DIGIT: Regions((EVERYTHING, NOTHING, NOTHING)), WORD: Regions((EVERYTHING, EVERYTHING, NOTHING))}


@dataclass(frozen=True)
class Meaning:
    """A class under both dialects. `folded`: widened for (?i) with case variants re itself confirmed, a lower bound
    of Python's set (so never used where an upper bound is needed)."""

    python: Regions
    ecma: Regions
    folded: bool = False

    @classmethod
    def same(cls, s: CharSet, folded: bool = False) -> "Meaning":
        r = Regions.of(s)
        return cls(r, r, folded)

    def __or__(self, o: "Meaning") -> "Meaning":
        if self.python is self.ecma and o.python is o.ecma:
            r = self.python | o.python
            return Meaning(r, r, self.folded or o.folded)
        return Meaning(self.python | o.python, self.ecma | o.ecma, self.folded or o.folded)

    def __invert__(self) -> "Meaning":
        if self.python is self.ecma:
            r = ~self.python
            return Meaning(r, r, self.folded)
        return Meaning(~self.python, ~self.ecma, self.folded)

    def bound(self, upper: bool) -> CharSet:
        """The characters both dialects accept (upper=False) or that either does (upper=True)."""
        if self.python is self.ecma:  # a literal, a range, `[^,]`...: the one meaning both have
            return self.python.rounded(upper)
        memo = self.__dict__.setdefault("_bounds", {})  # NOTE: a frozen dataclass; the memo is no field of it
        hit = memo.get(upper)
        if hit is None:
            hit = memo[upper] = ((self.python | self.ecma) if upper else (self.python & self.ecma)).rounded(upper)
        return hit


def _shorthand(letter: str) -> Meaning:
    base = letter.lower()
    if base == "d":
        m = Meaning(_ALL_PARTS[DIGIT], Regions.of(ASCII_DIGITS))
    elif base == "w":
        m = Meaning(_ALL_PARTS[WORD], Regions.of(ASCII_WORD))
    else:
        m = Meaning(Regions.of(PYTHON_SPACE), Regions.of(ECMA_SPACE))
    return ~m if letter.isupper() else m


@lru_cache(maxsize=4096)
def _literal(c: str) -> Meaning:
    return Meaning.same(CharSet(frozenset(c)))


@lru_cache(maxsize=4096)
def _folded_literal(c: str) -> Meaning:
    return Meaning.same(CharSet(_fold(frozenset(c))), folded=True)


def _fold(chars: frozenset) -> frozenset:
    """`chars` with the case variants Python's re (?i) matches them to (each checked with re: never more than it)."""
    out = set(chars)
    for c in chars:
        for v in {c.lower(), c.upper(), c.swapcase(), c.casefold(), c.title()}:
            if len(v) == 1 and v not in out and re.fullmatch(re.escape(c), v, re.IGNORECASE):
                out.add(v)
    return frozenset(out)


# ------------------------------------------------------------------------------------------------- tree
# Nodes are tuples, first item the kind:
#   ("set", Meaning, pos)  ("cat", nodes)  ("alt", nodes)  ("rep", node, min, max|None, pos)  ("eps",)
#   ("bol", pos)  ("eol", strict, pos)  ("wordb", negated, pos)  ("look", negated, node, pos)
# "eol" strict: Python's \Z (only the very end); `$` is ECMA's end, or in Python also before a final newline.
EPS = ("eps",)
_FLAG_LETTERS = "aiLmsux"
_UNSUPPORTED_FLAGS = {"a": "the ASCII flag", "L": "the locale flag", "m": "the multiline flag",
                      "x": "the verbose flag"}


@dataclass
class Tree:
    root: tuple
    has_assertions: bool  # some lookaround or \b / \B (they need the slower composition of DFAs)


def parse(pattern: str) -> Tree:
    """The syntax tree of `pattern`, which Python's re already compiles. InvalidRegexError (with position) for what
    is refused (see the module docstring)."""
    p = _Parser(pattern)
    root = p.alternation()
    if p.i != len(pattern):  # an unbalanced ')' (re would have refused it)
        p.fail(p.i, "unbalanced parenthesis")
    return Tree(root, p.has_assertions)


class _Parser:
    def __init__(self, pattern: str):
        self.s = pattern
        self.i = 0
        self.icase = False
        self.dotall = False
        self.has_assertions = False

    def fail(self, pos: int, why: str):
        raise InvalidRegexError(self.s, pos, why)

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    # ---- structure
    def alternation(self) -> tuple:
        options = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else ("alt", tuple(options))

    def sequence(self) -> tuple:
        items: list = []
        while self.i < len(self.s) and self.peek() not in "|)":
            atom = self.atom()
            if atom is None:  # a comment or the global flags: Python lets a quantifier after a comment apply before it
                if items:
                    items[-1] = self.quantified(items[-1])
                continue
            items.append(self.quantified(atom))
        if not items:
            return EPS
        return items[0] if len(items) == 1 else ("cat", tuple(items))

    def quantified(self, atom: tuple) -> tuple:
        while True:
            c = self.peek()
            pos = self.i
            if c == "*":
                lo, hi = 0, None
                self.i += 1
            elif c == "+":
                lo, hi = 1, None
                self.i += 1
            elif c == "?":
                lo, hi = 0, 1
                self.i += 1
            elif c == "{":
                counts = self.counts()
                if counts is None:
                    return atom
                lo, hi = counts
            else:
                return atom
            nxt = self.peek()
            if nxt == "?":
                self.i += 1  # lazy: the same language
            elif nxt == "+":
                self.fail(self.i, "possessive quantifiers are not ECMA-262")
            atom = ("rep", atom, lo, hi, pos)

    def counts(self) -> tuple[int, int | None] | None:
        """`{m}`, `{m,}`, `{m,n}` as Python reads them; None where the brace is a literal (Python's rule)."""
        m = re.compile(r"\{(\d*)(,?)(\d*)\}").match(self.s, self.i)
        if m is None or m.group(0) == "{}":
            return None
        lo, comma, hi = m.groups()
        if not lo and comma:
            self.fail(self.i, "'{,n}' is a count in Python but literal text in ECMA-262")
        self.i = m.end()
        lo_n = int(lo)
        if not comma:
            return lo_n, lo_n
        return lo_n, (int(hi) if hi else None)

    def atom(self) -> tuple | None:
        c = self.peek()
        pos = self.i
        if c == "(":
            return self.group()
        if c == "[":
            return ("set", self.char_class(), pos)
        self.i += 1
        if c == ".":
            # (?s) is Python syntax, so it has Python's meaning alone
            python = NOTHING if self.dotall else _chars("\n")
            ecma = NOTHING if self.dotall else ECMA_LINE_TERMINATORS
            return ("set", Meaning(Regions.of(~python), Regions.of(~ecma)), pos)
        if c == "^":
            return ("bol", pos)
        if c == "$":
            return ("eol", False, pos)
        if c == "\\":
            return self.escape(pos)
        return ("set", self.literal(c), pos)

    def literal(self, c: str) -> Meaning:
        return _folded_literal(c) if self.icase else _literal(c)

    def chars_meaning(self, chars: frozenset) -> Meaning:
        """Characters named literally (folded under (?i), Python's flag: ECMA-262 has no inline flags)."""
        if self.icase:
            return Meaning.same(CharSet(_fold(chars)), folded=True)
        return Meaning.same(CharSet(chars))

    # ---- groups
    def group(self) -> tuple | None:
        pos = self.i
        s = self.s
        self.i += 1
        if s.startswith("?", self.i):
            ext = s[self.i + 1:self.i + 2]
            if ext == ":":
                self.i += 2
            elif ext == "P":
                if s.startswith("?P<", self.i):  # a named group: the name matters only to backreferences
                    self.i = s.index(">", self.i) + 1
                else:  # (?P=name): a backreference
                    self.fail(pos, "backreferences are not regular")
            elif ext in ("=", "!"):
                self.i += 2
                self.has_assertions = True
                body = self.body(pos)
                return ("look", ext == "!", body, pos)
            elif ext == "<":
                self.fail(pos, "lookbehind is not supported")
            elif ext == "#":
                self.i = s.index(")", self.i) + 1
                return None
            elif ext == ">":
                self.fail(pos, "atomic groups are not ECMA-262")
            elif ext == "(":
                self.fail(pos, "conditional groups are not regular")
            else:
                return self.flag_group(pos)
        return self.body(pos)

    def body(self, pos: int) -> tuple:
        node = self.alternation()
        if self.peek() != ")":
            self.fail(pos, "missing )")
        self.i += 1
        return node

    def flag_group(self, pos: int) -> tuple | None:
        m = re.compile(r"\?([aiLmsux]*)(?:-([imsx]*))?([:)])").match(self.s, self.i)
        if m is None:
            self.fail(pos, "unknown group extension")
        on, off, end = m.group(1), m.group(2) or "", m.group(3)
        for f in on + off:
            if f in _UNSUPPORTED_FLAGS:
                self.fail(pos, f"{_UNSUPPORTED_FLAGS[f]} is not supported")
        self.i = m.end()
        saved = (self.icase, self.dotall)
        self.icase = ("i" in on or self.icase) and "i" not in off
        self.dotall = ("s" in on or self.dotall) and "s" not in off
        if end == ")":  # global flags (re allows them only at the start): they stay on
            return None
        node = self.body(pos)
        self.icase, self.dotall = saved
        return node

    # ---- escapes
    def escape(self, pos: int) -> tuple:
        """After a backslash outside a class."""
        c = self.peek()
        self.i += 1
        if c in "dDsSwW":
            return ("set", _shorthand(c), pos)
        if c in "bB":
            self.has_assertions = True
            return ("wordb", c == "B", pos)
        if c == "A":
            return ("bol", pos)
        if c == "Z":
            return ("eol", True, pos)
        if c.isdigit() and c != "0":
            octal = self.s[self.i - 1:self.i + 2]
            if len(octal) == 3 and all(d in "01234567" for d in octal):
                self.i += 2
                return ("set", self.literal(chr(int(octal, 8))), pos)
            self.fail(pos, "backreferences are not regular")
        return ("set", self.literal(self.char_escape(c, in_class=False)), pos)

    def char_escape(self, c: str, *, in_class: bool) -> str:
        """The character a non-class escape `\\c...` stands for (self.i just past `c`)."""
        simple = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "b": "\b"}
        if c in simple and (c != "b" or in_class):
            return simple[c]
        if c in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[c]
            digits = self.s[self.i:self.i + width]
            self.i += width
            return chr(int(digits, 16))
        if c == "N":
            end = self.s.index("}", self.i)
            name = self.s[self.i + 1:end]
            self.i = end + 1
            return unicodedata.lookup(name)
        if c in "01234567":  # octal: up to two more digits (outside a class only \0 gets here, see `escape`)
            j = self.i
            while j < len(self.s) and j - self.i < 2 and self.s[j] in "01234567":
                j += 1
            digits = c + self.s[self.i:j]
            self.i = j
            return chr(int(digits, 8))
        return c

    # ---- classes
    def char_class(self) -> Meaning:
        pos = self.i
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        if self.peek() == "]":
            self.fail(pos, "'[]...]' and '[^]...]' mean different things in ECMA-262 and Python")
        acc = Meaning.same(NOTHING)
        while True:
            c = self.peek()
            if c == "]":
                self.i += 1
                break
            item = self.class_item()
            if isinstance(item, Meaning):
                acc = acc | item
                continue
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                hi = self.class_item()
                if not isinstance(hi, str):  # re refuses these; kept as a clear error should it not
                    self.fail(pos, "a range ending in a shorthand class")
                acc = acc | self.chars_meaning(_span(ord(item), ord(hi)))
            else:
                acc = acc | self.chars_meaning(frozenset(item))
        if negated:
            if acc.folded:
                self.fail(pos, "a case-insensitive negated class is not supported")
            acc = ~acc
        return acc

    def class_item(self) -> str | Meaning:
        c = self.peek()
        self.i += 1
        if c != "\\":
            return c
        e = self.peek()
        self.i += 1
        if e in "dDsSwW":
            return _shorthand(e)
        return self.char_escape(e, in_class=True)
