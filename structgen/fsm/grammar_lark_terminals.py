"""The terminals of a Lark grammar read as trees (structgen.fsm.grammar): string literals with lark's escapes, `"lit"i`,
`"a".."z"` ranges and `/regex/flags`.

A regex is Python's `re` (what lark matches with), parsed by structgen.fsm.regex_syntax and taken with Python's
meaning of each class alone. Where that meaning is a part of Unicode too large to list (`\\w`, `\\W`, `\\S` inside a
negated class...), only its ASCII members are kept outside its finite parts (Regions.rounded, down): the tree never
matches more than re does. Anchors, lookarounds and word boundaries are refused: a terminal is matched whole.
"""

from __future__ import annotations

import re
import warnings

from ..errors import InvalidRegexError
from . import regex_dfa, regex_syntax
from .grammar import CHR, EPSILON, ClassBudget, alt, cat, literal, rep

_LARK_EVALUATED = {"n": "\n", "f": "\f", "t": "\t", "r": "\r"}
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}
REGEX_FLAGS = "imslux"


class Literals:
    """Reads the literal tokens of one grammar. `fail(why, pos)` raises InvalidGrammarError, `refuse(why, pos)`
    UnsupportedGrammarError, at character `pos` of the grammar; a token `t` is anything with `.text` and `.pos`."""

    def __init__(self, fail, refuse, classes: ClassBudget):
        self.fail = fail
        self.refuse = refuse
        self.classes = classes

    def unescape(self, body: str, t, regex: bool) -> str:
        """lark's reading of a literal's text: `\\n \\f \\t \\r \\xHH \\uHHHH \\UHHHHHHHH` are the characters, `\\"` is
        `"`; in a string `\\\\` is one backslash and any other `\\c` stays two characters; in a regex every other
        escape is left to the regex."""
        out = []
        i = 0
        while i < len(body):
            c = body[i]
            if c != "\\" or i + 1 == len(body):
                out.append(c)
                i += 1
                continue
            e = body[i + 1]
            i += 2
            if e in _LARK_EVALUATED:
                out.append(_LARK_EVALUATED[e])
            elif e in _HEX_WIDTH:
                digits = body[i:i + _HEX_WIDTH[e]]
                if not re.fullmatch(r"[0-9a-fA-F]+", digits) or len(digits) != _HEX_WIDTH[e]:
                    self.fail(f"\\{e} needs {_HEX_WIDTH[e]} hex digits", t.pos)
                cp = int(digits, 16)
                if cp > 0x10FFFF:
                    self.fail(f"\\{e}{digits} is past the last Unicode code point U+10FFFF", t.pos)
                out.append(chr(cp))
                i += _HEX_WIDTH[e]
            elif e == '"':
                out.append('"')
            elif e == "\\":
                out.append("\\\\" if regex else "\\")
            else:
                out.append("\\" + e)
        return "".join(out)

    def string(self, t) -> tuple:
        fold = t.text.endswith("i")
        text = self.unescape(t.text[1:-2] if fold else t.text[1:-1], t, regex=False)
        if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            self.fail("a lone surrogate is not a character: no text can hold it", t.pos)
        if not fold:
            return literal(text)
        return self.pattern(re.escape(text), "i", t)

    def char_range(self, lo, hi) -> tuple:
        a = self.unescape(lo.text[1:-1], lo, regex=False)
        b = self.unescape(hi.text[1:-1], hi, regex=False)
        if lo.text.endswith("i") or hi.text.endswith("i") or len(a) != 1 or len(b) != 1:
            self.fail('a range is "a".."z": two one-character strings, no flags', lo.pos)
        if ord(b) < ord(a):
            self.fail(f"the range {a!r}..{b!r} ends before it starts", lo.pos)
        return self.classes.char_class([(ord(a), ord(b))], False)

    def regex(self, t) -> tuple:
        end = t.text.rindex("/")
        flags = t.text[end + 1:]
        for f in flags:
            if f not in REGEX_FLAGS:
                self.fail(f"unknown regex flag {f!r} (lark's are i m s l u x)", t.pos)
            if f in "xl":
                self.refuse(f"the regex flag {f!r} is not supported", t.pos)
        body = self.unescape(t.text[1:end], t, regex=True)
        return self.pattern(body, "".join(f for f in flags if f in "is"), t)

    def pattern(self, body: str, flags: str, t) -> tuple:
        """A Python regex (lark's dialect) as a tree: its exact language, or a subset where re's classes are Unicode
        (the module docstring)."""
        if not body:
            self.fail("an empty regex", t.pos)
        text = (f"(?{flags})" if flags else "") + body
        what = f"regex {t.text[:40]!r}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                re.compile(text)
        except re.error as e:
            self.fail(f"{t.text[:60]}: {e.msg} (Python's re, which lark uses, rejects it)", t.pos)
        except (OverflowError, RecursionError) as e:
            self.fail(f"{t.text[:60]}: {e}", t.pos)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            regex_dfa.precheck(text, what)
        try:
            tree = regex_syntax.parse(text)
        except InvalidRegexError as e:  # re compiles it: a construct outside the supported subset
            self.refuse(f"{t.text[:60]}: {e}", t.pos)
        return self.regex_node(tree.root, t)

    def regex_node(self, node: tuple, t) -> tuple:
        kind = node[0]
        if kind == "set":
            s = node[1].python.rounded(False)
            return (CHR, s.chars, s.negated)
        if kind == "cat":
            return cat([self.regex_node(n, t) for n in node[1]])
        if kind == "alt":
            return alt([self.regex_node(n, t) for n in node[1]])
        if kind == "rep":
            return rep(self.regex_node(node[1], t), node[2], node[3])
        if kind == "eps":
            return EPSILON
        self.refuse(f"{t.text[:60]}: anchors, lookarounds and word boundaries are not supported in a terminal's "
                    "regex", t.pos)
