"""Regular expression trees -> small character DFAs, with a hard bound on the work spent; and the operations on DFAs
that lookaheads and word boundaries need (intersection, difference, union, concatenation).

The tree (built by structgen.fsm.regex_compile; `from_tree` adapts interegular's parse trees, which the tests use as an
independent reference) is nested tuples: (EPS,), (CHR, chars, negated), (CAT, parts), (ALT, options) and
(REP, node, min, max|None). interegular's `to_fsm` is not used: it has no limit and is quadratic in the states it
builds (`"a?" * 3000 + "a" * 3000` ran for minutes). Here:

1. the tree becomes a Glushkov position automaton: one position per character class occurrence, a counted
   repetition `{m,n}` unrolled into copies (the optional ones nested, `(x(x(x)?)?)?`, which keeps subsets small);
2. subset construction, a state being a bitmask (Python int) of positions;
3. Hopcroft minimization.

Every step counts its work against one `Budget` (positions, DFA states, abstract work units, an optional deadline), so
a pathological pattern is a ConstraintTooComplexError after a bounded amount of work instead of an unbounded compile.

A `CharFSM` is the result: characters map to symbols (`symbol_of` for the characters some class names, `else_symbol`
for all the others) and `map[state]` = {symbol: next state}; states are 0..n-1, no dead state is listed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from interegular.patterns import (REFlags, Unsupported, _CharGroup, _Concatenation, _NonCapturing, _Repeated,
                                  Pattern)

from ..errors import ConstraintTooComplexError

# Positions after unrolling repetition counts. The largest pattern in the JSONSchemaBench / test-suite data unrolls to
# ~3,100 (a list of literal alternatives); `[a-z]{1,255}`-style bounds are the common large case.
MAX_POSITIONS = 5_000
# DFA states of one pattern (before minimization) or one intersection. Real patterns need < 3,000 (measured over the
# 945 distinct patterns of the shared data; < 900 after minimization).
MAX_DFA_STATES = 20_000
# Abstract work units (a position visited in a follow set or subset, a symbol tried from a state, a predecessor in
# minimization): ~0.3 us each, so the limit is well under a second of work. The 945 distinct patterns of the shared data
# need at most 140,000 (median ~1,000).
MAX_WORK = 2_000_000
_DEADLINE_EVERY = 1 << 12  # work units between two deadline checks

EPS, CHR, CAT, ALT, REP = range(5)  # tree node kinds (see the module docstring)


@dataclass(frozen=True, eq=False)
class CharFSM:
    """A deterministic automaton over characters. `map[s]` = {symbol: next state}; a missing symbol is rejected."""

    symbol_of: dict  # str (one character) -> symbol, for every character some class of the pattern names
    else_symbol: int  # the symbol of every other character
    num_symbols: int
    initial: int
    finals: frozenset
    map: tuple  # (num_states,) of dict[int, int]

    @property
    def num_states(self) -> int:
        return len(self.map)


def intern_state(ids: dict, order: list, key, budget) -> int:
    """The id of the subset-construction state `key`, numbering it (and counting it against the budget) when new."""
    j = ids.get(key)
    if j is None:
        j = ids[key] = len(order)
        order.append(key)
        budget.states(len(order))
    return j


def _weight(mask: int) -> int:
    """Work units of one operation on a bitmask of positions: big-int operations cost with their length."""
    return 1 + (mask.bit_length() >> 10)


class Budget:
    """The work one pattern (or one intersection) may spend; raises ConstraintTooComplexError past it.
    max_work / max_states: this budget's own limits (a grammar, structgen.fsm.grammar, is one tree for many rules)."""

    def __init__(self, what: str = "regex", deadline: float | None = None, *, max_work: int = MAX_WORK,
                 max_states: int = MAX_DFA_STATES):
        self.what = what
        self.deadline = deadline
        self.max_work = max_work
        self.max_states = max_states
        self.work = 0
        self._next_check = _DEADLINE_EVERY

    def spend(self, units: int) -> None:
        self.work += units
        if self.work > self.max_work:
            raise ConstraintTooComplexError(f"{self.what}: work to build its automaton (units)", self.max_work)
        if self.work >= self._next_check:
            self._next_check = self.work + _DEADLINE_EVERY
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise ConstraintTooComplexError(f"{self.what}: seconds to build its automaton",
                                                "the compile deadline", "STRUCTGEN_COMPILE_TIMEOUT_S")

    def states(self, n: int) -> None:
        if n > self.max_states:
            raise ConstraintTooComplexError(f"{self.what}: automaton states", self.max_states)


# ------------------------------------------------------------------------------------------- tree -> AST
class _Classes:
    """Character classes used by a pattern, deduplicated: (chars, negated) -> index."""

    def __init__(self):
        self.items: list[tuple[frozenset, bool]] = []
        self._index: dict = {}

    def add(self, chars: frozenset, negated: bool) -> int:
        key = (chars, negated)
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.items)
            self.items.append(key)
        return i


def _to_ast(tree, flags: REFlags):
    """interegular's parse tree -> our tree, with the flags (i, s) applied to the classes."""
    if isinstance(tree, Pattern):
        flags = (flags | tree.added_flags) & ~tree.removed_flags
        return (ALT, tuple(_to_ast(o, flags) for o in tree.options))
    if isinstance(tree, _Concatenation):
        parts = []
        for p in tree.parts:
            if isinstance(p, _NonCapturing):
                raise Unsupported("lookaround")
            parts.append(_to_ast(p, flags))
        return (CAT, tuple(parts))
    if isinstance(tree, _Repeated):
        return (REP, _to_ast(tree.base, flags), tree.min, tree.max)
    if flags & REFlags.MULTILINE:
        raise Unsupported("the multiline flag")
    if isinstance(tree, _CharGroup):
        chars = tree.chars
        if flags & REFlags.CASE_INSENSITIVE:
            chars = frozenset({*(c.lower() for c in chars), *(c.upper() for c in chars)})
        return (CHR, chars, tree.negated)
    name = type(tree).__name__
    if name.endswith("DotCls"):
        # `.` is every character but a newline; with (?s), every character.
        chars = frozenset() if flags & REFlags.SINGLE_LINE else frozenset("\n")
        return (CHR, chars, True)
    if name.endswith("EmptyCls"):
        return (EPS,)
    raise Unsupported(f"pattern element {name}")


def _unrolled_size(node, limit: int) -> int:
    """AST nodes after unrolling every repetition count (saturates just past `limit`)."""
    kind = node[0]
    if kind in (EPS, CHR):
        return 1
    if kind in (CAT, ALT):
        total = 1
        for p in node[1]:
            total += _unrolled_size(p, limit)
            if total > limit:
                return limit + 1
        return total
    _, x, lo, hi = node
    copies = (lo + 1) if hi is None else max(hi, 1)
    return min(limit + 1, 1 + _unrolled_size(x, limit) * copies)


# ------------------------------------------------------------------------------------------ Glushkov
class _Glushkov:
    """Positions (1..n; 0 = the start) with their classes and follow sets (bitmasks)."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.classes = _Classes()
        self.cls = [-1]  # position -> class index
        self.follow = [0]  # position -> bitmask of positions that may come next

    def _position(self, cls: int) -> int:
        p = len(self.cls)
        if p > MAX_POSITIONS:
            raise ConstraintTooComplexError(f"{self.budget.what}: character positions after unrolling "
                                            "repetition counts", MAX_POSITIONS)
        self.cls.append(cls)
        self.follow.append(0)
        self.budget.spend(1)
        return p

    def _link(self, last: int, first: int) -> None:
        if not first:
            return
        follow = self.follow
        n = 0
        while last:
            low = last & -last
            follow[low.bit_length() - 1] |= first
            last ^= low
            n += 1
        self.budget.spend(n * _weight(first))

    def _concat(self, acc, part):
        first, last, nullable = acc
        f, l, n = part
        self._link(last, f)
        return (first | f if nullable else first), (l | last if n else l), nullable and n

    def build(self, node) -> tuple[int, int, bool]:
        """(first, last, nullable) of `node`, allocating fresh positions for its characters."""
        kind = node[0]
        if kind == EPS:
            return 0, 0, True
        if kind == CHR:
            p = self._position(self.classes.add(node[1], node[2]))
            return 1 << p, 1 << p, False

        if kind == CAT:
            acc = (0, 0, True)
            for part in node[1]:
                acc = self._concat(acc, self.build(part))
            return acc
        if kind == ALT:
            first = last = 0
            nullable = False
            for option in node[1]:
                f, l, n = self.build(option)
                first, last, nullable = first | f, last | l, nullable or n
            return first, last, nullable
        _, x, lo, hi = node
        acc = (0, 0, True)
        for _ in range(lo):
            acc = self._concat(acc, self.build(x))
        if hi is None:
            f, l, n = self.build(x)
            self._link(l, f)  # x*
            return self._concat(acc, (f, l, True))
        if hi > lo:
            # NOTE: the optional copies nest, (x(x(x)?)?)?: copy j+1 can only follow copy j, so the subsets the DFA
            # builds stay small (a flat x?x?x? lets every copy start anywhere).
            copies = [self.build(x) for _ in range(hi - lo)]
            of = ol = 0
            for f, l, n in reversed(copies):
                self._link(l, of)
                of = f | of if n else f
                ol |= l
            acc = self._concat(acc, (of, ol, True))
        return acc


def _partition(classes: list[tuple[frozenset, bool]], budget: Budget):
    """Characters -> symbols: two characters share a symbol iff every class holds both or neither.
    Returns (symbol_of, else_symbol, members) where members[symbol] = bitmask of the classes that hold it."""
    sig: dict[str, int] = {}
    for i, (chars, _) in enumerate(classes):
        bit = 1 << i
        for c in chars:
            sig[c] = sig.get(c, 0) | bit
        budget.spend(len(chars))
    negated = 0
    for i, (_, neg) in enumerate(classes):
        if neg:
            negated |= 1 << i
    symbol_by_sig: dict[int, int] = {0: 0}  # signature 0 = no class names the character: the else symbol
    symbol_of = {}
    for c, s in sig.items():
        sym = symbol_by_sig.get(s)
        if sym is None:
            sym = symbol_by_sig[s] = len(symbol_by_sig)
        symbol_of[c] = sym
    members = [0] * len(symbol_by_sig)
    for s, sym in symbol_by_sig.items():
        members[sym] = s ^ negated  # a negated class holds exactly the characters its set does not name
    return symbol_of, 0, members


def from_tree(tree, budget: Budget) -> CharFSM:
    """The minimal DFA of interegular's parse tree `tree` (full match, characters as symbols)."""
    return from_ast(_to_ast(tree, REFlags(0)), budget)


def from_ast(ast, budget: Budget) -> CharFSM:
    """The minimal DFA of the tree `ast` (full match, characters as symbols)."""
    if _unrolled_size(ast, 4 * MAX_POSITIONS) > 4 * MAX_POSITIONS:
        raise ConstraintTooComplexError(f"{budget.what}: pattern size after unrolling repetition counts",
                                        4 * MAX_POSITIONS)
    g = _Glushkov(budget)
    first, last, nullable = g.build(ast)
    g.follow[0] = first
    accept = last | (1 if nullable else 0)
    symbol_of, else_symbol, members = _partition(g.classes.items, budget)
    # positions of each symbol: those whose class holds it
    by_class: dict[int, int] = {}
    for p in range(1, len(g.cls)):
        by_class[g.cls[p]] = by_class.get(g.cls[p], 0) | (1 << p)
    pos_of_symbol = []
    for m in members:
        mask = 0
        for ci, positions in by_class.items():
            if m >> ci & 1:
                mask |= positions
        pos_of_symbol.append(mask)
    budget.spend(len(members) * max(1, len(by_class)))
    table, finals = _subsets(g.follow, accept, pos_of_symbol, budget)
    return _minimize(table, finals, symbol_of, else_symbol, len(members), budget)


def _subsets(follow: list[int], accept: int, pos_of_symbol: list[int], budget: Budget):
    """Subset construction from the start position: (map, finals) with states numbered in discovery order."""
    ids = {1: 0}  # bitmask {position 0} = the start
    order = [1]
    table = []
    finals = set()
    live_symbols = [(sym, mask) for sym, mask in enumerate(pos_of_symbol) if mask]
    i = 0
    while i < len(order):
        s = order[i]
        if s & accept:
            finals.add(i)
        reach = 0
        rest, n = s, 0
        while rest:
            low = rest & -rest
            reach |= follow[low.bit_length() - 1]
            rest ^= low
            n += 1
        row = {}
        if reach:
            for sym, mask in live_symbols:
                t = reach & mask
                if t:
                    row[sym] = intern_state(ids, order, t, budget)
        budget.spend((n + len(live_symbols)) * _weight(reach))
        table.append(row)
        i += 1
    return table, finals


def _minimize(table: list[dict], finals: set, symbol_of: dict, else_symbol: int, num_symbols: int,
              budget: Budget) -> CharFSM:
    """Drop the moves into dead states (a missing move means the same), merge the states no string tells apart
    (Hopcroft's partition refinement), and keep the states reachable from state 0, renumbered in the order found."""
    n = len(table)
    preds: list[list[tuple[int, int]]] = [[] for _ in range(n)]  # state -> (symbol, predecessor)
    for s, row in enumerate(table):
        for sym, t in row.items():
            preds[t].append((sym, s))
    live = set(finals)
    todo = list(finals)
    while todo:
        for _, s in preds[todo.pop()]:
            if s not in live:
                live.add(s)
                todo.append(s)
    budget.spend(n + sum(len(p) for p in preds))
    table = [{sym: t for sym, t in row.items() if t in live} for row in table]
    block = _refine(n, preds, finals, budget)
    number: dict[int, int] = {block[0]: 0}
    order = [0]  # one state of each reachable block, in the order found from the initial state
    rows: list[dict] = []
    i = 0
    while i < len(order):
        row = {}
        for sym, t in table[order[i]].items():
            b = number.get(block[t])
            if b is None:
                b = number[block[t]] = len(order)
                order.append(t)
            row[sym] = b
        rows.append(row)
        i += 1
    budget.spend(len(order))
    final_blocks = frozenset(number[block[s]] for s in finals if block[s] in number)
    return CharFSM(symbol_of, else_symbol, num_symbols, 0, final_blocks, tuple(rows))


def _refine(n: int, preds: list[list[tuple[int, int]]], finals: set, budget: Budget) -> list[int]:
    """Hopcroft: the coarsest partition of the states that respects finality and every move (state -> block id).

    NOTE: the automaton is partial (a missing move goes to an implicit dead state D). The initial partition is
    {finals, other states, D} and the splitters start as the first two: all blocks but one, as Hopcroft's argument
    needs, so D never has to be a splitter (its predecessors are never listed)."""
    block = [0 if s in finals else 1 for s in range(n)]
    blocks: list[set] = [set(), set()]
    for s in range(n):
        blocks[block[s]].add(s)
    if not blocks[1]:
        blocks.pop()
    elif not blocks[0]:
        blocks[0], blocks[1] = blocks[1], blocks[0]
        blocks.pop()
        block = [0] * n
    waiting = list(range(len(blocks)))
    in_waiting = set(waiting)
    while waiting:
        a = waiting.pop()
        in_waiting.discard(a)
        by_symbol: dict[int, set] = {}
        units = 0
        for t in list(blocks[a]):
            for sym, q in preds[t]:
                got = by_symbol.get(sym)
                if got is None:
                    by_symbol[sym] = {q}
                else:
                    got.add(q)
            units += 1 + len(preds[t])
        budget.spend(units)
        for xs in by_symbol.values():
            touched: dict[int, list] = {}
            for q in xs:
                touched.setdefault(block[q], []).append(q)
            for b, qs in touched.items():
                whole = blocks[b]
                if len(qs) == len(whole):
                    continue
                moved = set(qs)
                if 2 * len(moved) > len(whole):
                    moved = whole - moved
                whole -= moved
                new = len(blocks)
                blocks.append(moved)
                for q in moved:
                    block[q] = new
                # NOTE: `moved` is the smaller half; if b still waits, both halves must (b is already there).
                waiting.append(new)
                in_waiting.add(new)
            budget.spend(len(xs))
    return block


# ---------------------------------------------------------------------------------------- intersection
def intersect(a: CharFSM, b: CharFSM, budget: Budget) -> CharFSM:
    """The DFA of the strings both `a` and `b` accept (product construction over a common partition)."""
    return _product(a, b, budget, lambda x, y: x and y)


def difference(a: CharFSM, b: CharFSM, budget: Budget) -> CharFSM:
    """The DFA of the strings `a` accepts and `b` does not."""
    return _product(a, b, budget, lambda x, y: x and not y)


def union(a: CharFSM, b: CharFSM, budget: Budget) -> CharFSM:
    """The DFA of the strings `a` or `b` accepts."""
    return _product(a, b, budget, lambda x, y: x or y)


def _pair_symbols(a: CharFSM, b: CharFSM, budget: Budget):
    """The common partition of two DFAs' alphabets: (symbol_of, [((a symbol, b symbol), symbol), ...])."""
    pair_symbol: dict[tuple[int, int], int] = {(a.else_symbol, b.else_symbol): 0}
    symbol_of = {}
    for c in set(a.symbol_of) | set(b.symbol_of):
        key = (a.symbol_of.get(c, a.else_symbol), b.symbol_of.get(c, b.else_symbol))
        sym = pair_symbol.get(key)
        if sym is None:
            sym = pair_symbol[key] = len(pair_symbol)
        symbol_of[c] = sym
    budget.spend(len(symbol_of))
    return symbol_of, list(pair_symbol.items())


def _product(a: CharFSM, b: CharFSM, budget: Budget, accept) -> CharFSM:
    """Product construction; a side's state is None once it is dead (a missing move of a partial DFA rejects), kept
    only while `accept(a final, b final)` may still become true."""
    symbol_of, pairs = _pair_symbols(a, b, budget)
    keep_a_dead, keep_b_dead = accept(False, True), accept(True, False)
    ids = {(a.initial, b.initial): 0}
    order = [(a.initial, b.initial)]
    table, finals = [], set()
    no_moves: dict = {}
    i = 0
    while i < len(order):
        x, y = order[i]
        if accept(x is not None and x in a.finals, y is not None and y in b.finals):
            finals.add(i)
        ra = a.map[x] if x is not None else no_moves
        rb = b.map[y] if y is not None else no_moves
        row = {}
        for (sa, sb), sym in pairs:
            tx, ty = ra.get(sa), rb.get(sb)
            if (tx is None and (ty is None or not keep_a_dead)) or (ty is None and not keep_b_dead):
                continue
            j = ids.get((tx, ty))
            if j is None:
                j = ids[(tx, ty)] = len(order)
                order.append((tx, ty))
                budget.states(len(order))
            row[sym] = j
        budget.spend(len(pairs))
        table.append(row)
        i += 1
    return _minimize(table, finals, symbol_of, 0, len(pairs), budget)


def concat(a: CharFSM, b: CharFSM, budget: Budget) -> CharFSM:
    """The DFA of the strings u v with u accepted by `a` and v by `b` (subset construction: a's state and the set of
    b's states its final states have started)."""
    symbol_of, pairs = _pair_symbols(a, b, budget)
    a_finals, b_finals = a.finals, b.finals

    def enter(x, ys: frozenset):
        return (x, ys | {b.initial}) if x is not None and x in a_finals else (x, ys)

    start = enter(a.initial, frozenset())
    ids = {start: 0}
    order = [start]
    table, finals = [], set()
    i = 0
    while i < len(order):
        x, ys = order[i]
        if not ys.isdisjoint(b_finals):
            finals.add(i)
        ra = a.map[x] if x is not None else {}
        row = {}
        for (sa, sb), sym in pairs:
            tx = ra.get(sa)
            tys = frozenset(t for t in (b.map[y].get(sb) for y in ys) if t is not None)
            if tx is None and not tys:
                continue
            row[sym] = intern_state(ids, order, enter(tx, tys), budget)
        budget.spend(len(pairs) * (1 + len(ys)))
        table.append(row)
        i += 1
    return _minimize(table, finals, symbol_of, 0, len(pairs), budget)


# ------------------------------------------------------------------------------------ cheap checks first
# Characters of a pattern's text: past this it is refused before it is parsed at all.
MAX_PATTERN_CHARS = 100_000
# Group / repetition nesting: the parser (structgen.fsm.regex_syntax) and the tree walks recurse a few frames per
# level; real patterns nest at most 13 deep in the shared data.
MAX_NESTING = 50
# Characters named by the pattern's classes, summed over its text: a class is a set of every character in its ranges
# (`[\x00-\U0010ffff]`: 1.1M characters, ~0.3 s, ~90 MB). Real patterns name at most ~730.
MAX_CLASS_CHARS = 300_000


def precheck(pattern: str, what: str) -> None:
    """ConstraintTooComplexError where `pattern` (valid for Python's re) is too big to build cheaply: text length,
    nesting, characters in classes, positions after unrolling counts (the exact limits the builder would hit later,
    found from re's own parse tree, which keeps ranges and counts unexpanded)."""
    import re._constants as C
    import re._parser as P

    if len(pattern) > MAX_PATTERN_CHARS:
        raise ConstraintTooComplexError(f"{what}: characters in the pattern", MAX_PATTERN_CHARS)
    try:
        tree = P.parse(pattern)
    except RecursionError:
        raise ConstraintTooComplexError(f"{what}: nesting depth of groups", MAX_NESTING) from None
    stack = [(list(tree), 0)]
    class_chars = 0
    while stack:  # iterative: depth is what is being checked
        items, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ConstraintTooComplexError(f"{what}: nesting depth of groups", MAX_NESTING)
        for op, av in items:
            if op is C.IN:
                class_chars += sum(a[1] - a[0] + 1 if o is C.RANGE else 1 for o, a in av)
            for sub in _children(C, op, av):
                stack.append((list(sub), depth + 1))
    if class_chars > MAX_CLASS_CHARS:
        raise ConstraintTooComplexError(f"{what}: characters named in character classes", MAX_CLASS_CHARS)
    if _positions(C, tree, MAX_POSITIONS) > MAX_POSITIONS:
        raise ConstraintTooComplexError(f"{what}: character positions after unrolling repetition counts",
                                        MAX_POSITIONS)


def _children(C, op, av):
    if op is C.SUBPATTERN:
        return (av[3],)
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        return (av[2],)
    if op is C.BRANCH:
        return tuple(av[1])
    if op in (C.ASSERT, C.ASSERT_NOT):
        return (av[1],)
    if op is C.ATOMIC_GROUP:
        return (av,)
    if op is C.GROUPREF_EXISTS:
        return tuple(x for x in av[1:] if x is not None)
    return ()


def _positions(C, items, limit: int) -> int:
    """Characters after unrolling every count (saturating past `limit`); depth is bounded by precheck's scan."""
    total = 0
    for op, av in items:
        if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
            total += 1
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            copies = lo + 1 if hi == C.MAXREPEAT else max(hi, 1)
            inner = _positions(C, sub, limit)
            total += min(limit + 1, inner * copies)
        elif op is C.BRANCH:
            total += sum(_positions(C, b, limit) for b in av[1])
        else:
            total += sum(_positions(C, sub, limit) for sub in _children(C, op, av))
        if total > limit:
            return limit + 1
    return total
