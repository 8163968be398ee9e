"""Lark grammar text (the `lark` package's syntax, as outlines' CFG and llguidance send it) -> the rule graph
(structgen.fsm.grammar).

    %import common.NUMBER
    %import common.WS
    %ignore WS
    start: pair ("," pair)*
    pair: KEY "=" NUMBER
    KEY: /[a-z]+/

The language is the grammar's over characters: every terminal (UPPER-case definitions, string literals, `/regex/`,
`"a".."z"`) stands for the strings it matches whole, and rules (lower-case) combine them; the lexer is not modelled
(what lark's Earley parser with lexer="dynamic_complete" accepts). `%ignore X` lets X* stand after every terminal a
rule uses, never inside one, and not before the first (as llguidance and xgrammar read it; lark also skips it there,
so whatever is generated still parses with lark).

Read: rules and terminals (`?rule`, `!rule`, `_rule`, priorities `name.2` and aliases `-> name` are taken and ignored:
they shape the tree, not the language), `|` (continuing on a line that starts with `|`), groups, `[...]` (optional),
`? * +`, `~ n`, `~ n..m`, `{n}`, `{n,}`, `{n,m}`, `{,m}`, `"lit"` (lark's escapes) and `"lit"i`, `/regex/` with the flags
`i s` (and `m u`, which change nothing without anchors), `"a".."z"`, `%import common.NAME [-> ALIAS]`,
`%import common (A, B)`, `%ignore`, `//` and `#` comments.
Refused, with line and column: other libraries, `%declare`, `%override`, `%extend`, templates `name{...}`, rule
attributes `name[...]`, llguidance / xgrammar extensions (`%json`, `%lark`, `%regex`, special tokens `<|...|>`,
`@grammar`), regexes with anchors, lookarounds, word boundaries or the `x`/`l` flags, recursive terminals.
`/regex/` is read with Python's re (what lark uses); where re's classes are Unicode (`\\w`, `\\W`, `\\S` in a negated
class...) only their ASCII members are generated outside their finite parts (grammar_lark_terminals.py), so the
output stays inside what re matches.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..errors import ConstraintTooComplexError, InvalidGrammarError, UnsupportedGrammarError
from .grammar import (ALT, CAT, EPS, EPSILON, MAX_NESTING, MAX_RULES, REF, REP, ClassBudget, Grammar, alt, cat,
                      line_col, rep)
from .grammar_lark_terminals import Literals

IGNORE = "%ignore"  # the rule every terminal used by a rule is followed by (a name no definition can have)

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\f\r]+)
  | (?P<comment>(?://|\#)[^\n]*)
  | (?P<nl>\n)
  | (?P<string>"(?:\\.|[^"\\\n])*"i?)
  | (?P<regex>/(?!/)(?:\\.|[^/\\\n])+/[a-z]*)
  | (?P<op>\.\.|->|[:|()\[\]?*+~.,{}!])
  | (?P<directive>%[A-Za-z_]+)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<number>\d+)
""", re.X)
_RULE_NAME = re.compile(r"_?[a-z][_a-z0-9]*\Z")
_TERMINAL_NAME = re.compile(r"_?[A-Z][_A-Z0-9]*\Z")


class _Tok:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind: str, text: str, pos: int):
        self.kind, self.text, self.pos = kind, text, pos


def parse_lark(text: str, start: str) -> Grammar:
    p = _Parser(text)
    p.grammar()
    if start not in p.rules:
        raise InvalidGrammarError(f"the grammar has no rule {start!r} to start from (define `{start}: ...`)")
    if start in p.terminals:
        raise InvalidGrammarError(f"the start {start!r} is a terminal: start from a rule")
    p.check_terminals()
    rules = dict(p.rules)
    rules[IGNORE] = rep(alt(p.ignored), 0, None) if p.ignored else EPSILON
    where = dict(p.where)
    where[IGNORE] = (None, None)
    return Grammar(rules, where, start, "lark")


class _Parser:
    def __init__(self, text: str, library: bool = False):
        self.s = text
        self.toks = self.tokenize(text)
        self.k = 0
        self.depth = 0
        self.rules: dict = {}
        self.where: dict = {}
        self.terminals: set = set()
        self.ignored: list = []
        self.literals = Literals(self.fail, self.refuse, ClassBudget())
        self.library = library
        self.in_terminal = False

    # ---- tokens
    def tokenize(self, text: str) -> list[_Tok]:
        out: list[_Tok] = []
        i = 0
        while i < len(text):
            m = _TOKEN.match(text, i)
            if m is None:
                c = text[i]
                if c == "<":
                    self.refuse("special tokens (`<|...|>`, `<[...]>`) are not supported", i)
                if c == "@":
                    self.refuse("references to other grammars (`@name`) are not supported", i)
                if c == '"':
                    self.fail("unterminated string literal (a literal ends on its line)", i)
                if c == "/":
                    self.fail("unterminated regex (a /regex/ ends on its line)", i)
                self.fail(f"unexpected {c!r}", i)
            kind = m.lastgroup
            if kind == "nl":
                if out and out[-1].kind != "nl":
                    out.append(_Tok("nl", "\n", i))
            elif kind not in ("ws", "comment"):
                out.append(_Tok(kind, m.group(0), i))
            i = m.end()
        out.append(_Tok("end", "", len(text)))
        return out

    def fail(self, why: str, pos: int | None = None):
        raise InvalidGrammarError(why, *line_col(self.s, self.toks[self.k].pos if pos is None else pos))

    def refuse(self, why: str, pos: int | None = None):
        raise UnsupportedGrammarError(why, (), *line_col(self.s, self.toks[self.k].pos if pos is None else pos))

    def peek(self) -> _Tok:
        """The next token; a line break inside brackets, or before a line starting with `|`, is skipped."""
        t = self.toks[self.k]
        if t.kind == "nl" and (self.depth > 0 or self.toks[self.k + 1].text == "|"):
            self.k += 1
            t = self.toks[self.k]
        return t

    def take(self) -> _Tok:
        t = self.peek()
        self.k += 1
        return t

    def expect(self, text: str, what: str) -> _Tok:
        t = self.peek()
        if t.text != text or t.kind not in ("op",):
            self.fail(f"expected {text!r} {what}, found {t.text or 'the end'!r}")
        return self.take()

    # ---- items
    def grammar(self) -> None:
        while True:
            t = self.toks[self.k]
            if t.kind == "nl":
                self.k += 1
                continue
            if t.kind == "end":
                return
            if t.kind == "directive":
                self.directive()
            else:
                self.definition()
            t = self.toks[self.k]
            if t.kind not in ("nl", "end"):
                self.fail(f"unexpected {t.text!r}: one definition or directive per line (an alternative on the next "
                          "line starts with '|')")

    def definition(self) -> None:
        start = self.peek()
        modifiers = ""
        while self.peek().text in ("?", "!"):
            modifiers += self.take().text
        t = self.take()
        if t.kind != "name":
            self.fail("expected a rule (`name: ...`), a terminal (`NAME: ...`) or a directive (`%import`, "
                      "`%ignore`)", t.pos)
        name = t.text
        terminal = name.lstrip("_")[:1].isupper()
        if not (_TERMINAL_NAME if terminal else _RULE_NAME).match(name):
            self.fail(f"{name!r}: rule names are lower case (`_?[a-z][_a-z0-9]*`), terminal names upper case "
                      "(`_?[A-Z][_A-Z0-9]*`)", t.pos)
        if terminal and modifiers:
            self.fail(f"the modifiers {modifiers!r} apply to rules, not to the terminal {name!r}", start.pos)
        nxt = self.toks[self.k]
        if nxt.text == "{":
            self.refuse(f"templates (`{name}{{...}}: ...`) are not supported", nxt.pos)
        if nxt.text == "[":
            self.refuse(f"rule attributes (`{name}[...]: ...`) are not supported", nxt.pos)
        if nxt.text == ".":  # a priority: lexing and tree choices only
            self.k += 1
            if self.take().kind != "number":
                self.fail(f"expected a priority number after {name!r}.")
        self.expect(":", f"after {name!r}")
        self.in_terminal = terminal
        body = self.expansions()
        self.define(name, body, start.pos, terminal)

    def define(self, name: str, body: tuple, pos: int, terminal: bool) -> None:
        if name in self.rules:
            line, col = self.where[name]
            self.fail(f"{name!r} is defined twice (first at line {line}, column {col})", pos)
        if len(self.rules) >= MAX_RULES:
            raise ConstraintTooComplexError("grammar: rules and terminals", MAX_RULES)
        self.rules[name] = body
        self.where[name] = line_col(self.s, pos)
        if terminal:
            self.terminals.add(name)

    def directive(self) -> None:
        t = self.take()
        word = t.text
        if word == "%ignore":
            self.in_terminal = True
            self.ignored.append(self.expansions())
            return
        if word == "%import":
            self.import_(t)
            return
        if word in ("%declare", "%override", "%extend"):
            self.refuse(f"{word} is not supported", t.pos)
        if word in ("%json", "%lark", "%regex", "%grammar_options", "%llguidance"):
            self.refuse(f"{word} (an llguidance / xgrammar extension) is not supported", t.pos)
        self.fail(f"unknown directive {word}", t.pos)

    def import_(self, directive: _Tok) -> None:
        path = [self.take()]
        if path[0].text == ".":
            self.refuse("relative imports are not supported: only the `common` library", path[0].pos)
        while self.toks[self.k].text == ".":
            self.k += 1
            path.append(self.take())
        if any(p.kind != "name" for p in path):
            self.fail("expected a library path such as common.NUMBER", directive.pos)
        if path[0].text != "common":
            self.refuse(f"%import {'.'.join(p.text for p in path)}: only the `common` library is supported",
                        path[0].pos)
        if len(path) == 2:
            names = [(path[1], path[1].text)]
            if self.toks[self.k].text == "->":
                self.k += 1
                alias = self.take()
                if alias.kind != "name":
                    self.fail("expected a name after '->'", alias.pos)
                names = [(path[1], alias.text)]
        elif len(path) == 1 and self.toks[self.k].text == "(":
            self.k += 1
            names = []
            while True:
                n = self.take()
                if n.kind != "name":
                    self.fail("expected a name in the import list", n.pos)
                names.append((n, n.text))
                sep = self.take()
                if sep.text == ")":
                    break
                if sep.text != ",":
                    self.fail("expected ',' or ')' in the import list", sep.pos)
        else:
            self.fail("expected `%import common.NAME` or `%import common (NAME, ...)`", directive.pos)
        library = _common()
        for tok, alias in names:
            if tok.text not in library:
                self.fail(f"common has no terminal {tok.text!r} (it has {', '.join(sorted(library))})", tok.pos)
            if not _TERMINAL_NAME.match(alias):
                self.fail(f"{alias!r}: an imported terminal needs an upper-case name", tok.pos)
            self.define(alias, library[tok.text], directive.pos, True)

    # ---- expressions
    def expansions(self) -> tuple:
        options = [self.alias()]
        while self.peek().text == "|":
            self.k += 1
            options.append(self.alias())
        return alt(options)

    def alias(self) -> tuple:
        items = []
        while True:
            t = self.peek()
            if t.kind in ("nl", "end") or t.text in ("|", ")", "]", "->"):
                break
            items.append(self.expr())
        if self.peek().text == "->":
            self.k += 1
            if self.take().kind != "name":
                self.fail("expected a name after '->'")
        return cat(items)

    def expr(self) -> tuple:
        atom = self.atom()
        t = self.toks[self.k]  # an operator stands on the atom's line
        if t.text in ("?", "*", "+"):
            self.k += 1
            return rep(atom, *{"?": (0, 1), "*": (0, None), "+": (1, None)}[t.text])
        if t.text == "~":
            self.k += 1
            lo = self.number()
            hi = lo
            if self.toks[self.k].text == "..":
                self.k += 1
                hi = self.number()
            return self.counted(atom, lo, hi, t)
        if t.text == "{":
            self.k += 1
            lo = self.number() if self.toks[self.k].kind == "number" else None
            hi = lo
            if self.toks[self.k].text == ",":
                self.k += 1
                hi = self.number() if self.toks[self.k].kind == "number" else None
                if lo is None and hi is None:
                    self.fail("a repetition count is {n}, {n,}, {n,m} or {,m}", t.pos)
                lo = 0 if lo is None else lo
            elif lo is None:
                self.refuse("templates (`name{...}`) are not supported", t.pos)
            if self.take().text != "}":
                self.fail("expected '}' to close the repetition count", t.pos)
            return self.counted(atom, lo, hi, t)
        return atom

    def counted(self, atom, lo: int, hi: int | None, t: _Tok) -> tuple:
        if hi is not None and hi < lo:
            self.fail(f"repetition {lo}..{hi}: the upper bound is below the lower one", t.pos)
        return rep(atom, lo, hi)

    def number(self) -> int:
        t = self.take()
        if t.kind != "number":
            self.fail("expected a number", t.pos)
        return int(t.text)

    def atom(self) -> tuple:
        t = self.take()
        if t.text in ("(", "[") and t.kind == "op":
            self.depth += 1
            if self.depth > MAX_NESTING:
                self.fail(f"groups nest deeper than {MAX_NESTING} levels", t.pos)
            body = self.expansions()
            close = ")" if t.text == "(" else "]"
            if self.peek().text != close:
                self.fail(f"missing {close!r} for the group opened here", t.pos)
            self.depth -= 1
            self.k += 1
            return body if close == ")" else rep(body, 0, 1)
        if t.kind == "string":
            if self.toks[self.k].text == "..":
                self.k += 1
                hi = self.take()
                if hi.kind != "string":
                    self.fail("expected a string after '..'", hi.pos)
                return self.lexeme(self.literals.char_range(t, hi))
            return self.lexeme(self.literals.string(t))
        if t.kind == "regex":
            return self.lexeme(self.literals.regex(t))
        if t.kind == "name":
            terminal = t.text.lstrip("_")[:1].isupper()
            if self.in_terminal and not terminal:
                self.fail(f"a terminal cannot use the rule {t.text!r}: terminals are made of terminals only", t.pos)
            ref = (REF, t.text, *line_col(self.s, t.pos))
            return self.lexeme(ref) if terminal else ref
        if t.kind == "directive":
            self.refuse(f"{t.text} (an llguidance / xgrammar extension) is not supported", t.pos)
        self.fail(f"unexpected {t.text or 'end of the grammar'!r}: expected a string, a /regex/, a name or a group",
                  t.pos)

    def lexeme(self, node: tuple) -> tuple:
        """A terminal as a rule uses it: followed by what %ignore skips. Inside terminals it stands alone."""
        if self.in_terminal or self.library or node[0] == EPS:  # an empty literal reads no terminal
            return node
        return cat([node, (REF, IGNORE, None, None)])

    # ---- checks once every definition is read
    def check_terminals(self) -> None:
        """Lark's own rules: a terminal is made of terminals, never recursively."""
        state: dict = {}
        for root in sorted(self.terminals):
            stack = [(root, iter(sorted(_terminal_refs(self.rules[root]))))]
            state[root] = 1
            while stack:
                name, it = stack[-1]
                for ref in it:
                    if ref not in self.rules:
                        continue  # reported as undefined with its position later
                    if state.get(ref) == 1:
                        line, col = self.where[ref]
                        raise InvalidGrammarError(f"the terminal {ref!r} is recursive: lark terminals cannot "
                                                  "recurse (make it a rule)", line, col)
                    if ref not in state:
                        state[ref] = 1
                        stack.append((ref, iter(sorted(_terminal_refs(self.rules[ref])))))
                        break
                else:
                    state[name] = 2
                    stack.pop()


def _terminal_refs(body: tuple) -> set:
    out, stack = set(), [body]
    while stack:
        n = stack.pop()
        if n[0] == REF:
            out.add(n[1])
        elif n[0] in (ALT, CAT):
            stack.extend(n[1])
        elif n[0] == REP:
            stack.append(n[1])
    return out


# The `common` library's terminals, in lark's own syntax; where lark's definition relies on lazy matching with a
# lookbehind (ESCAPED_STRING, C_COMMENT) the language it lexes is written out instead: a string or a comment ends at
# the first closing quote (not escaped) or `*/`.
_COMMON = r"""
DIGIT: "0".."9"
HEXDIGIT: "a".."f" | "A".."F" | DIGIT
INT: DIGIT+
SIGNED_INT: ["+" | "-"] INT
DECIMAL: INT "." INT? | "." INT
_EXP: ("e" | "E") SIGNED_INT
FLOAT: INT _EXP | DECIMAL _EXP?
SIGNED_FLOAT: ["+" | "-"] FLOAT
NUMBER: FLOAT | INT
SIGNED_NUMBER: ["+" | "-"] NUMBER
ESCAPED_STRING: "\"" /([^"\\\n]|\\.)*/ "\""
LCASE_LETTER: "a".."z"
UCASE_LETTER: "A".."Z"
LETTER: UCASE_LETTER | LCASE_LETTER
WORD: LETTER+
CNAME: ("_" | LETTER) ("_" | LETTER | DIGIT)*
WS_INLINE: (" " | /\t/)+
WS: /[ \t\f\r\n]/+
CR: /\r/
LF: /\n/
NEWLINE: (CR? LF)+
SH_COMMENT: /#[^\n]*/
CPP_COMMENT: /\/\/[^\n]*/
C_COMMENT: "/*" /([^*]|\*+[^*\/])*\*+\//
SQL_COMMENT: /--[^\n]*/
"""


@lru_cache(maxsize=1)
def _common() -> dict:
    """name -> the terminal's tree, with no references left."""
    from .grammar_regular import solve

    p = _Parser(_COMMON, library=True)
    p.grammar()
    return solve(p.rules, p.where, sorted(p.rules))
