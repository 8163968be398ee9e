"""Grammar constraints (EBNF as xgrammar / llama.cpp's GBNF write it, or Lark) -> a byte automaton, exactly.

A grammar is compiled only where its language is regular: the parser (grammar_ebnf.py, grammar_lark.py) builds the
rule graph as expression trees whose leaves are characters and references to rules; grammar_regular.py inlines the
rules and turns recursion that is linear (every path back to the rule at the very end of it, or every one at the very
start) into the equivalent Kleene star; the result is one expression tree in structgen.fsm.regex_dfa's own node
kinds, determinized there under its work budget. Recursion through the middle of a rule (balanced brackets, nested
JSON) is not regular: UnsupportedGrammarError, naming the rules. Nothing is approximated.

Tree nodes are regex_dfa's tuples plus one kind: (EPS,), (CHR, chars, negated), (CAT, parts), (ALT, options),
(REP, node, min, max|None), (REF, name, line, column). Trees are shared (a DAG): every walk here is iterative and
memoized by node identity, so neither deep nesting nor sharing costs more than the distinct nodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConstraintTooComplexError, InvalidGrammarError
from . import regex_dfa as D

EPS, CHR, CAT, ALT, REP = D.EPS, D.CHR, D.CAT, D.ALT, D.REP
REF = 5

EPSILON = (EPS,)
EMPTY = (CHR, frozenset(), False)  # the empty language (no string)
ANY_CHAR = (CHR, frozenset(), True)

SYNTAXES = ("ebnf", "lark")
MAX_CODE_POINT = 0x10FFFF

# Size limits, each checked before the work it bounds.
MAX_GRAMMAR_CHARS = D.MAX_PATTERN_CHARS  # characters of grammar text
MAX_RULES = 2_000  # rule and terminal definitions
MAX_NESTING = D.MAX_NESTING  # groups nested inside one rule (the parsers recurse per level)
# Nesting of the one tree every rule is inlined into: regex_dfa's builder recurses once per level (Python's stack is
# ~1,000 frames). Real grammars reach a few dozen.
MAX_INLINED_DEPTH = 300
MAX_POSITIONS = D.MAX_POSITIONS  # characters of the inlined tree once repetition counts are unrolled
MAX_CLASS_CHARS = D.MAX_CLASS_CHARS  # characters listed by the grammar's classes, summed
# Determinizing: one grammar is one tree for all its rules, so it may spend more than one regex (regex_dfa's own limits
# are sized for patterns). A 16-rule SQL subset with %ignore WS takes ~3.2M work units (~0.4 s) and 11,500 subset
# states (770 once minimized); the compile's deadline bounds it as well.
MAX_WORK = 40_000_000
MAX_DFA_STATES = 100_000  # and no more than CompileLimits.max_states
MAX_FLAT = 64  # items a sequence or an alternation takes from the nested ones it is made of


@dataclass
class Grammar:
    """The rule graph: name -> body (REF nodes name other rules), where each is defined, the start rule."""

    rules: dict
    where: dict  # name -> (line, column) of its definition
    start: str
    syntax: str


# ----------------------------------------------------------------------------------------------- tree builders
def cat(parts) -> tuple:
    flat: list = []
    for p in parts:
        if p is EMPTY:
            return EMPTY
        if p[0] != EPS:
            flat.append(p)
    return _flattened(CAT, flat) if flat else EPSILON


def alt(options) -> tuple:
    flat, seen = [], set()
    for o in options:
        if o is not EMPTY and id(o) not in seen:
            seen.add(id(o))
            flat.append(o)
    return _flattened(ALT, flat) if flat else EMPTY


def _flattened(kind: int, items: list) -> tuple:
    """(kind, items) with the items of the same kind spliced in while that keeps it within MAX_FLAT items.
    NOTE: never without a bound: `r0 ::= r1 r1`, `r1 ::= r2 r2`, ... would splice into 2**n items, where nested
    nodes share each other (a DAG of n nodes)."""
    size = sum(len(x[1]) if x[0] == kind else 1 for x in items)
    if size <= MAX_FLAT:
        out, seen = [], set()
        for x in items:
            for y in (x[1] if x[0] == kind else (x,)):
                if kind == CAT or id(y) not in seen:
                    seen.add(id(y))
                    out.append(y)
        items = out
    return items[0] if len(items) == 1 else (kind, tuple(items))


def rep(x: tuple, lo: int, hi: int | None) -> tuple:
    if hi == 0 or x[0] == EPS:
        return EPSILON
    if x is EMPTY:
        return EPSILON if lo == 0 else EMPTY
    if lo == 1 and hi == 1:
        return x
    return (REP, x, lo, hi)


def literal(text: str) -> tuple:
    return cat([(CHR, frozenset(c), False) for c in text])


class ClassBudget:
    """Counts the characters the grammar's classes list (a class is a set of every character of its ranges)."""

    def __init__(self):
        self.chars = 0

    def char_class(self, ranges: list[tuple[int, int]], negated: bool) -> tuple:
        """(CHR, ...) of the code point ranges (inclusive), or of everything outside them. A class holding more than
        half of Unicode is kept as the complement of the rest, so no class lists more than half of it."""
        ranges = _merged(ranges)
        if sum(hi - lo + 1 for lo, hi in ranges) > (MAX_CODE_POINT + 1) // 2:
            ranges, negated = _complement(ranges), not negated
        size = sum(hi - lo + 1 for lo, hi in ranges)
        self.chars += size
        if self.chars > MAX_CLASS_CHARS:
            raise ConstraintTooComplexError("grammar: characters named in character classes", MAX_CLASS_CHARS)
        return (CHR, frozenset(chr(c) for lo, hi in ranges for c in range(lo, hi + 1)), negated)


def _merged(ranges):
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def _complement(ranges):
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE_POINT:
        out.append((nxt, MAX_CODE_POINT))
    return out


# ------------------------------------------------------------------------------------------------ tree walks
def children(node: tuple) -> tuple:
    kind = node[0]
    if kind in (CAT, ALT):
        return node[1]
    if kind == REP:
        return (node[1],)
    return ()


def fold(root: tuple, leaf, inner, memo: dict | None = None):
    """Bottom-up value of `root`: leaf(node) for nodes without children, inner(node, [child values]) for the others.
    Iterative and memoized by identity (memo: id -> (node, value); the node is held so its id stays its own)."""
    memo = {} if memo is None else memo
    stack = [root]
    while stack:
        node = stack[-1]
        if id(node) in memo:
            stack.pop()
            continue
        kids = children(node)
        todo = [c for c in kids if id(c) not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        memo[id(node)] = (node, inner(node, [memo[id(c)][1] for c in kids]) if kids else leaf(node))
    return memo[id(root)][1]


def rebuild(node: tuple, kids: list) -> tuple:
    """`node` with its children replaced (the same object where none changed)."""
    old = children(node)
    if all(a is b for a, b in zip(old, kids)):
        return node
    if node[0] == CAT:
        return cat(kids)
    if node[0] == ALT:
        return alt(kids)
    return rep(kids[0], node[2], node[3])


def substitute(node: tuple, env: dict, memo: dict | None = None) -> tuple:
    """`node` with each REF whose name is in `env` replaced by env[name] (other references kept)."""
    return fold(node, lambda n: env.get(n[1], n) if n[0] == REF else n, rebuild, memo)


def positions(node: tuple, limit: int) -> int:
    """Characters of `node` once repetition counts are unrolled, as regex_dfa counts them (saturates past limit)."""
    def inner(n, kids):
        if n[0] == REP:
            copies = n[2] + 1 if n[3] is None else max(n[3], 1)
            return min(limit + 1, kids[0] * copies)
        return min(limit + 1, sum(kids))

    return fold(node, lambda n: 1 if n[0] == CHR else 0, inner)


def depth(node: tuple) -> int:
    return fold(node, lambda n: 1, lambda n, kids: 1 + max(kids))


def line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based (line, column) of character `pos` of `text`."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


# --------------------------------------------------------------------------------------------------- syntax
_EBNF_RULE = re.compile(r"^[ \t]*[A-Za-z_][\w.-]*[ \t]*::=", re.M)
_LARK_ITEM = re.compile(r"^[ \t]*(?:[?!]*_?[A-Za-z][\w]*(?:\.-?\d+)?[ \t]*:(?!:)|%(?:import|ignore)\b)", re.M)


def detect_syntax(text: str) -> str:
    """"ebnf" where some line defines a rule with `::=`, else "lark" where some line defines one with `:` (or holds a
    %import / %ignore), else "ebnf" (whose parser then says what it expected)."""
    if _EBNF_RULE.search(text):
        return "ebnf"
    return "lark" if _LARK_ITEM.search(text) else "ebnf"


def parse(text: str, syntax: str, start: str | None = None) -> Grammar:
    if not isinstance(text, str):
        raise TypeError(f"a grammar is a str, got {type(text).__name__}")
    if syntax not in SYNTAXES:
        raise ValueError(f"grammar syntax must be one of {', '.join(SYNTAXES)}, got {syntax!r}")
    if len(text) > MAX_GRAMMAR_CHARS:
        raise ConstraintTooComplexError("grammar: characters in the grammar", MAX_GRAMMAR_CHARS)
    if syntax == "ebnf":
        from .grammar_ebnf import parse_ebnf

        return parse_ebnf(text, start or "root")
    from .grammar_lark import parse_lark

    return parse_lark(text, start or "start")


def grammar_expression(grammar: Grammar) -> tuple:
    """The start rule as one tree without references (every rule inlined, linear recursion as stars), within the
    size limits. UnsupportedGrammarError where the grammar is not regular."""
    from .grammar_regular import solve

    root = solve(grammar.rules, grammar.where, [grammar.start])[grammar.start]
    if positions(root, MAX_POSITIONS) > MAX_POSITIONS:
        raise ConstraintTooComplexError("grammar: character positions once rules are inlined and repetition counts "
                                        "unrolled", MAX_POSITIONS)
    if depth(root) > MAX_INLINED_DEPTH:
        raise ConstraintTooComplexError("grammar: nesting depth once rules are inlined", MAX_INLINED_DEPTH)
    return root


def grammar_automaton(text: str, *, syntax: str, start: str | None = None, deadline: float | None = None,
                      max_states: int = MAX_DFA_STATES):
    """Byte automaton (structgen.fsm.regex.RegexAutomaton) accepting exactly the UTF-8 text the grammar derives from
    its start rule. deadline: time.monotonic() past which building the DFA stops; max_states: most DFA states
    (before minimization) it may take; past either, ConstraintTooComplexError."""
    from .regex import CharDFA, RegexAutomaton

    grammar = parse(text, syntax, start)
    budget = D.Budget(f"grammar (start rule {grammar.start!r})", deadline, max_work=MAX_WORK,
                      max_states=min(max_states, MAX_DFA_STATES))
    fsm = D.from_ast(grammar_expression(grammar), budget)
    dfa = CharDFA.from_fsm(fsm, False)
    if dfa.is_empty:
        line, col = grammar.where[grammar.start]
        raise InvalidGrammarError(f"the start rule {grammar.start!r} matches no string", line, col)
    return RegexAutomaton(dfa)
