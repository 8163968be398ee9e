"""EBNF grammar text (xgrammar's dialect, which extends llama.cpp's GBNF) -> the rule graph (structgen.fsm.grammar).

    root  ::= item ("," item){0,4}     # a comment
    item  ::= [a-zA-Z_] [a-zA-Z0-9_]* | "\\"" [^"\\\\]* "\\""

Read: rules `name ::= expression` (names of letters, digits, `_`, `-`, `.`, not starting with a digit; a rule body may
span lines and ends where the next `name ::=` starts); string literals in double quotes with the escapes `\\" \\\\ \\/
\\' \\?`, `\\n \\r \\t \\b \\f \\a \\v \\0 \\e`, `\\xHH`, `\\uHHHH`, `\\UHHHHHHHH`; classes `[...]` / `[^...]` with ranges
and the same escapes plus `\\^ \\$ \\. \\* \\+ \\( \\) \\[ \\] \\{ \\} \\| \\-`, `[^]` = any character; `.` = any
character (newline too); groups, empty groups `( )`, `|`, `* + ?`, `{m}`, `{m,}`, `{m,n}`; `#` comments.
Refused, with line and column: `\\x` with more than two hex digits (GBNF reads two, xgrammar all of them: write
`\\u`/`\\U`), shorthands like `\\d` in classes, `{,n}`, two repetition operators in a row, lookahead assertions
`(= ...)`, rule options `name[...] ::=` and xgrammar's macros (TagDispatch, Token, ...).
"""

from __future__ import annotations

import re

from ..errors import ConstraintTooComplexError, InvalidGrammarError, UnsupportedGrammarError
from .grammar import (ANY_CHAR, MAX_NESTING, MAX_RULES, REF, ClassBudget, Grammar, alt, cat, line_col, literal,
                      rep)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_RULE_START = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*[ \t]*(\[[^\]\n]*\])?[ \t]*::=")
_COUNTS = re.compile(r"\{[ \t]*(\d*)[ \t]*(,[ \t]*(\d*)[ \t]*)?\}")
_MACROS = ("TagDispatch", "TokenTagDispatch", "Token", "ExcludeToken")
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "'": "'", "?": "?", "n": "\n", "r": "\r", "t": "\t", "b": "\b",
           "f": "\f", "a": "\a", "v": "\v", "0": "\0", "e": "\x1b"}
_CLASS_ONLY = set("^$.*+()[]{}|-")
_HEX = "0123456789abcdefABCDEF"


def parse_ebnf(text: str, start: str) -> Grammar:
    rules, where = _Parser(text).grammar()
    if start not in rules:
        raise InvalidGrammarError(f"the grammar has no rule {start!r} to start from (define `{start} ::= ...`)")
    return Grammar(rules, where, start, "ebnf")


class _Parser:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.depth = 0
        self.classes = ClassBudget()

    def fail(self, why: str, pos: int | None = None):
        raise InvalidGrammarError(why, *line_col(self.s, self.i if pos is None else pos))

    def refuse(self, why: str, pos: int):
        raise UnsupportedGrammarError(why, (), *line_col(self.s, pos))

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip(self) -> None:
        s, n = self.s, len(self.s)
        while self.i < n:
            c = s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "#":
                j = s.find("\n", self.i)
                self.i = n if j < 0 else j
            else:
                return

    # ---- rules
    def grammar(self) -> tuple[dict, dict]:
        rules: dict = {}
        where: dict = {}
        self.skip()
        if self.i == len(self.s):
            self.fail("the grammar is empty: define at least `root ::= ...`")
        while self.i < len(self.s):
            pos = self.i
            m = _NAME.match(self.s, self.i)
            if m is None:
                self.fail(f"expected a rule name (`name ::= ...`), found {self.peek()!r}")
            name = m.group(0)
            self.i = m.end()
            if self.peek() == "[":
                self.refuse(f"rule options (`{name}[...] ::=`) are not supported", self.i)
            self.skip()
            if not self.s.startswith("::=", self.i):
                self.fail(f"expected '::=' after the rule name {name!r}")
            self.i += 3
            body = self.alternation()
            if name in rules:
                line, col = where[name]
                self.fail(f"rule {name!r} is defined twice (first at line {line}, column {col})", pos)
            if len(rules) >= MAX_RULES:
                raise ConstraintTooComplexError("grammar: rules", MAX_RULES)
            rules[name] = body
            where[name] = line_col(self.s, pos)
            self.skip()
        return rules, where

    def alternation(self) -> tuple:
        options = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.sequence())
        return alt(options)

    def sequence(self) -> tuple:
        items = []
        while True:
            self.skip()
            c = self.peek()
            if c in ("", "|", ")") or _RULE_START.match(self.s, self.i):
                return cat(items)
            items.append(self.quantified(self.element()))

    def quantified(self, atom: tuple) -> tuple:
        self.skip()
        c = self.peek()
        if c and c in "*+?":
            self.i += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{":
            m = _COUNTS.match(self.s, self.i)
            if m is None:
                self.fail("a repetition count is `{m}`, `{m,}` or `{m,n}`")
            if not m.group(1):
                self.fail("a repetition count needs its lower bound: write `{0,n}`")
            lo = int(m.group(1))
            hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
            if hi is not None and hi < lo:
                self.fail(f"repetition count {{{lo},{hi}}}: the upper bound is below the lower one")
            self.i = m.end()
        else:
            return atom
        self.skip()
        if self.peek() and self.peek() in "*+?{":
            self.fail("two repetition operators in a row: wrap the element in parentheses, e.g. (\"a\"+)*")
        return rep(atom, lo, hi)

    def element(self) -> tuple:
        c = self.peek()
        pos = self.i
        if c == '"':
            return self.string()
        if c == "[":
            return self.char_class()
        if c == ".":
            self.i += 1
            return ANY_CHAR
        if c == "(":
            self.i += 1
            self.skip()
            if self.peek() == "=":
                self.refuse("lookahead assertions `(= ...)` are not supported", pos)
            self.depth += 1
            if self.depth > MAX_NESTING:
                self.fail(f"groups nest deeper than {MAX_NESTING} levels")
            body = self.alternation()
            if self.peek() != ")":
                self.fail("missing ')' for the group opened here", pos)
            self.i += 1
            self.depth -= 1
            return body
        m = _NAME.match(self.s, self.i)
        if m is not None:
            self.i = m.end()
            if m.group(0) in _MACROS and self.peek() == "(":
                self.refuse(f"the macro {m.group(0)}(...) is not supported", pos)
            return (REF, m.group(0), *line_col(self.s, pos))
        if c == "'":
            self.fail("string literals use double quotes")
        self.fail(f"unexpected {c!r}: expected a string, a class, '.', a group or a rule name")

    # ---- literals
    def string(self) -> tuple:
        start = self.i
        self.i += 1
        out = []
        while True:
            c = self.peek()
            if c == "":
                self.fail("unterminated string literal", start)
            if c == "\n":
                self.fail("a raw newline in a string literal: write \\n")
            self.i += 1
            if c == '"':
                break
            if c == "\\":
                cp = self.escape(in_class=False)
                if 0xD800 <= cp <= 0xDFFF:
                    self.fail(f"\\u{cp:04x} is a lone surrogate, not a character: no text can hold it")
                c = chr(cp)
            out.append(c)
        return literal("".join(out))

    def escape(self, in_class: bool) -> int:
        """The code point of the escape after a backslash (self.i at its letter)."""
        pos = self.i - 1
        c = self.peek()
        self.i += 1
        if c in _SIMPLE:
            return ord(_SIMPLE[c])
        if in_class and c in _CLASS_ONLY:
            return ord(c)
        if c == "x":
            j = self.i
            while j < len(self.s) and self.s[j] in _HEX:
                j += 1
            digits = self.s[self.i:j]
            if not digits:
                self.fail("\\x needs hex digits", pos)
            if len(digits) > 2:
                self.fail(f"\\x{digits} is ambiguous (GBNF reads two hex digits, xgrammar all of them): write "
                          f"\\u or \\U with exactly 4 or 8 digits", pos)
            self.i = j
            return int(digits, 16)
        if c in ("u", "U"):
            width = 4 if c == "u" else 8
            digits = self.s[self.i:self.i + width]
            if len(digits) != width or any(d not in _HEX for d in digits):
                self.fail(f"\\{c} needs exactly {width} hex digits", pos)
            self.i += width
            cp = int(digits, 16)
            if cp > 0x10FFFF:
                self.fail(f"\\{c}{digits} is past the last Unicode code point U+10FFFF", pos)
            return cp
        if in_class and c in "dDwWsS":
            self.fail(f"shorthand classes like \\{c} are not supported: write the ranges, e.g. [0-9]", pos)
        if c == "":
            self.fail("a backslash at the end of the grammar", pos)
        self.fail(f"unknown escape \\{c}", pos)

    def char_class(self) -> tuple:
        start = self.i
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        if self.peek() == "]":
            if not negated:
                self.fail("an empty character class `[]` matches nothing", start)
            self.i += 1
            return ANY_CHAR
        ranges = []
        while True:
            c = self.peek()
            if c == "]":
                self.i += 1
                break
            lo = self.class_char(start)
            if self.peek() == "-" and self.s[self.i + 1:self.i + 2] not in ("]", ""):
                self.i += 1
                hi = self.class_char(start)
                if hi < lo:
                    self.fail(f"the range {chr(lo)!r}-{chr(hi)!r} ends before it starts")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        return self.classes.char_class(ranges, negated)

    def class_char(self, start: int) -> int:
        c = self.peek()
        if c == "":
            self.fail("unterminated character class", start)
        if c == "\n":
            self.fail("a raw newline in a character class: write [\\n]")
        self.i += 1
        return self.escape(in_class=True) if c == "\\" else ord(c)
