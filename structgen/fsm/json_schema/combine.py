"""Boolean combinations of sub-automata over one JSON value: `not`, `if`/`then`/`else`, overlapping `oneOf`, and the
item tests of `contains`.

A `Combine` leaf runs k sub-automata (each a `SchemaAutomaton` over its own node graph) side by side over the bytes
of one value: frame = (node, states), one state per part (None once the part has rejected). Which of them must
accept is a formula in disjunctive normal form: the value may end when some term holds, a term being "these parts
final, those not final, and at least one of these final" (see `Term`). For example `{"not": N}` next to the rest P is
the one term (P final, N not final); `oneOf` [A, B] is (A final, B not) or (B final, A not).

Every frame is kept productive: a successor is offered only if some continuation makes a term hold. That is a search
over product states (A*: a byte costs 1, the lower bound is each part's own shortest completion), memoized per state;
the states on the shortest way out found get their exact cost too, so the walk along a witness never searches again.
A search past MAX_MOVE_SEARCH states counts as "no way out" for that successor (pruned: never an invalid value, at
worst a valid one not offered); past MAX_SEARCH for the node's first state it raises ConstraintTooComplexError
(nothing could be offered).

NOTE (soundness): a part that must *not* accept (N above, the other oneOf branches, an `if` that fails) is an exact
test only if it accepts every text the carrier may write that JSON Schema says it matches. The compiler builds such
parts in *condition* mode (Compiler.condition): spec semantics for objects, keys in any order, enum values by value
(1 == 1.0 == 1.00), every format jsonschema checks refused, patterns with approximated Unicode classes refused,
depth limits at least the carrier's nesting; and number exponents are off in any schema that has a condition.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

from ...errors import ConstraintTooComplexError
from .nodes import NEVER, POP, Node, alt, seq

MAX_SEARCH = 5_000  # product states the search for a node's first way out may expand (past it: too complex)
# NOTE: while decoding, a successor whose search passes this is pruned (never an invalid value, at worst a valid one
# not offered). Doomed states (no term can ever hold, e.g. two oneOf branches that both match every string) spend
# the whole limit, once per successor, so it is kept well below MAX_SEARCH.
MAX_MOVE_SEARCH = 1_000
SUB_MAX_STATES = 1 << 22  # a part's own state limit (the token index's table limit bounds the whole)
_INF = math.inf


@dataclass(frozen=True)
class Term:
    """Holds when every part in `final` is final, none in `not_final` is, and (if `some` is non-empty) one of `some`
    is. NOTE: data, not a callable: compiled graphs are pickled (disk cache, compile workers)."""

    final: frozenset = frozenset()
    not_final: frozenset = frozenset()
    some: frozenset = frozenset()

    def holds(self, finals) -> bool:
        return (all(finals[i] for i in self.final) and not any(finals[i] for i in self.not_final)
                and (not self.some or any(finals[i] for i in self.some)))

    def possible(self, alive) -> bool:
        """Whether the term can still hold once the dead parts (alive[i] False) never accept."""
        return all(alive[i] for i in self.final) and (not self.some or any(alive[i] for i in self.some))

    def lower(self, dist) -> float:
        """Fewest bytes until the term can hold, from each part's own shortest completion (a lower bound)."""
        need = max((dist[i] for i in self.final), default=0)
        if self.some:
            need = max(need, min(dist[i] for i in self.some))
        return need


class Combine(Node):
    """One JSON value that the parts accept as the terms say (see the module docstring)."""

    __slots__ = ("parts", "terms", "what", "implies", "_autos", "_exit", "_initial")

    def __init__(self, parts, terms, what: str, share: "Combine | None" = None, implies: tuple = ()):
        from .matcher import SchemaAutomaton  # matcher imports nodes; nodes must not import matcher

        self.parts = tuple(parts)
        self.terms = tuple(terms)
        self.what = what
        # (g, t) pairs: part g's language is within part t's (a oneOf branch's generator and its own test), so once
        # only they are live, g's shortest completion is the exact way out
        self.implies = tuple(implies)
        if share is not None and share.parts == self.parts:
            # NOTE: another test over the same parts (contains: hit / miss) runs the same sub-automata: their states and
            # memo tables are shared rather than built twice.
            self._autos = share._autos
        else:
            self._autos = tuple(None if p is NEVER else SchemaAutomaton(p, max_states=SUB_MAX_STATES)
                                for p in self.parts)
        self._exit: dict = {}  # states -> fewest bytes until a term holds (inf: none found)
        self._initial = tuple(None if a is None else a.initial() for a in self._autos)

    @classmethod
    def build(cls, parts, terms, what: str, share: "Combine | None" = None, implies: tuple = ()) -> Node:
        """The node, or NEVER if no value satisfies the terms (ConstraintTooComplexError if the search for one runs
        past MAX_SEARCH). share: a Combine over the same parts whose sub-automata to reuse; implies: see __init__."""
        node = cls(parts, terms, what, share if isinstance(share, Combine) else None, implies)
        if not any(t.possible([a is not None for a in node._autos]) for t in node.terms):
            return NEVER
        if node._exit_cost(node._initial, strict=True) == _INF:
            return NEVER
        return node

    # --------------------------------------------------------------------------------- frame protocol
    def entry(self):
        return (self, self._initial)

    def _finals(self, states) -> tuple:
        return tuple(s is not None and s[1] for s in states)

    def _accepts(self, states) -> bool:
        finals = self._finals(states)
        return any(t.holds(finals) for t in self.terms)

    def epsilon(self, frame):
        return ((POP,),) if self._accepts(frame[1]) else ()

    def moves(self, frame) -> dict:
        out = {}
        by_next: dict = {}
        for b, nxt in self._steps(frame[1]).items():
            ok = by_next.get(nxt)
            if ok is None:
                ok = by_next[nxt] = self._exit_cost(nxt) != _INF
            if ok:
                out[b] = (self, nxt)
        return out

    def exit_bytes(self, frame, child_exit) -> float:
        return self._exit_cost(frame[1])

    # ------------------------------------------------------------------------------------- product
    def _steps(self, states) -> dict:
        """{byte: successor states} over every byte some live part reads (successors may be dead ends)."""
        rows = [None if s is None else a.transitions(s) for a, s in zip(self._autos, states)]
        read: set = set()
        for r in rows:
            if r:
                read.update(r)
        out = {}
        for b in read:
            out[b] = tuple(None if r is None else r.get(b) for r in rows)
        return out

    def _lower(self, states) -> float:
        """A consistent lower bound on the bytes until a term holds: per term, its parts' own shortest completions, and
        at least one byte where the term does not hold yet (min over terms)."""
        alive = [s is not None for s in states]
        dist = [_INF if s is None else a.min_bytes_to_final(s) for a, s in zip(self._autos, states)]
        finals = self._finals(states)
        best = _INF
        for t in self.terms:
            if t.possible(alive):
                best = min(best, t.lower(dist) if t.holds(finals) else max(1, t.lower(dist)))
        return best

    def _exit_cost(self, start, strict: bool = False) -> float:
        """Fewest bytes from `start` until a term holds (A* over product states); inf if none within MAX_SEARCH."""
        hit = self._exit.get(start)
        if hit is not None:
            return hit
        h0 = self._lower(start)
        if h0 == _INF:
            self._exit[start] = _INF
            return _INF
        alone = self._alone(start)
        if alone is not None:
            # NOTE: one live part left that decides alone (the tests against it have rejected): its own shortest
            # completion is exact, no product search (the common case once a `not`'s test or the other oneOf
            # branches have died).
            a = self._autos[alone]
            cost = self._exit[start] = a.min_bytes_to_final(start[alone])
            return cost
        for g, t in self.implies:
            if start[g] is not None and start[t] is not None and \
                    all(s is None or i in (g, t) for i, s in enumerate(start)):
                cost = self._exit[start] = self._autos[g].min_bytes_to_final(start[g])
                return cost
        tie = itertools.count()
        # (f, -g, tie, g, state, rest): rest None = a state to expand; else a goal marker, `rest` bytes from `state`
        # on. NOTE: among equal f the deepest first: the search runs down one way out instead of widening every prefix.
        heap = [(h0, 0, next(tie), 0, start, None)]
        g_best = {start: 0}
        parent: dict = {start: None}
        expanded = 0
        while heap:
            f, _, _, g, st, rest = heapq.heappop(heap)
            if rest is not None:
                return self._record(parent, g_best, st, g + rest)
            if g > g_best[st]:
                continue
            known = self._exit.get(st) if st is not start else None
            if known is not None:
                if known != _INF:
                    heapq.heappush(heap, (g + known, -g, next(tie), g, st, known))
                continue
            if self._accepts(st):
                return self._record(parent, g_best, st, g)
            expanded += 1
            if expanded > (MAX_SEARCH if strict else MAX_MOVE_SEARCH):
                if strict:
                    raise ConstraintTooComplexError(f"states searched for a value of {self.what}", MAX_SEARCH)
                break
            if expanded % 256 == 0:
                for a in self._autos:
                    if a is not None:
                        a._tick()
            for nxt in set(self._steps(st).values()):
                ng = g + 1
                if ng >= g_best.get(nxt, _INF):
                    continue
                h = self._lower(nxt)
                if h == _INF:
                    continue
                g_best[nxt] = ng
                parent[nxt] = st
                heapq.heappush(heap, (ng + h, -ng, next(tie), ng, nxt, None))
        self._exit[start] = _INF
        return _INF

    def _alone(self, states):
        """The index of the one live part whose acceptance alone decides from here, or None: every possible term
        needs exactly that part final, nothing else live matters (its not_final parts are dead, its `some` holds
        through it)."""
        alive = [s is not None for s in states]
        live = [i for i, x in enumerate(alive) if x]
        if len(live) != 1:
            return None
        i = live[0]
        for t in self.terms:
            if t.possible(alive) and not (t.final <= {i} and (not t.some or i in t.some)
                                          and (i in t.final or i in t.some)):
                return None
        return i

    def _record(self, parent: dict, g_best: dict, last, total: float) -> float:
        """Exact costs along the shortest path found, start to `last` (total bytes from the start to a holding term):
        a state g bytes in is total - g from the end (a subpath of a shortest path is shortest)."""
        st = last
        while st is not None:
            self._exit[st] = total - g_best[st]
            st = parent[st]
        return total


def max_nesting(node) -> int:
    """The deepest container nesting of any text `node` accepts (0 for scalars): a condition judging such text must
    not cut its own depth any shallower (Compiler._condition_for). NOTE: iterative over the node graph (a DAG once
    recursion is unrolled), memoized by identity; children are found through the nodes' slots, so a node type needs
    no entry here beyond saying whether it is a container."""
    from .arrays import JsonArray
    from .contains import JsonContainsArray
    from .nodes import Literal
    from .objects import JsonObject

    containers = (JsonArray, JsonContainsArray, JsonObject)
    memo: dict = {}
    stack = [(node, False)]
    while stack:
        n, done = stack.pop()
        if id(n) in memo and not done:
            continue
        if isinstance(n, Literal):
            memo[id(n)] = _literal_depth(n)
            continue
        kids = list(_child_nodes(n))
        if done:
            memo[id(n)] = (1 if isinstance(n, containers) else 0) + max((memo.get(id(k), 0) for k in kids), default=0)
            continue
        memo[id(n)] = 0  # placeholder: a cycle (none expected) then counts as flat, never loops
        stack.append((n, True))
        stack.extend((k, False) for k in kids if id(k) not in memo)
    return memo[id(node)]


def _child_nodes(n):
    for cls in type(n).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            v = getattr(n, slot, None)
            for x in (v if isinstance(v, (tuple, list)) else (v,)):
                if isinstance(x, Node):
                    yield x
                elif hasattr(x, "__dataclass_fields__"):  # e.g. objects.Property
                    for f in x.__dataclass_fields__:
                        y = getattr(x, f)
                        if isinstance(y, Node):
                            yield y


def _literal_depth(lit) -> int:
    best = 0
    for text in lit.options:
        depth, in_str, esc = 0, False, False
        for b in text:
            if in_str:
                if esc:
                    esc = False
                elif b == 0x5C:
                    esc = True
                elif b == 0x22:
                    in_str = False
            elif b == 0x22:
                in_str = True
            elif b in (0x5B, 0x7B):
                depth += 1
                best = max(best, depth)
            elif b in (0x5D, 0x7D):
                depth -= 1
    return best


def strings_dfa(values):
    """A CharDFA accepting exactly the strings `values` (a trie): string enums judged by their decoded value, so
    every spelling (escapes included) of a listed string matches."""
    from .. import regex_dfa
    from ..regex import CharDFA

    chars = sorted({c for v in values for c in v})
    symbol_of = {c: i + 1 for i, c in enumerate(chars)}  # symbol 0: every other character (no transition)
    table: list[dict] = [{}]
    finals = set()
    for v in values:
        s = 0
        for c in v:
            sym = symbol_of[c]
            nxt = table[s].get(sym)
            if nxt is None:
                nxt = table[s][sym] = len(table)
                table.append({})
            s = nxt
        finals.add(s)
    fsm = regex_dfa.CharFSM(symbol_of=symbol_of, else_symbol=0, num_symbols=len(chars) + 1, initial=0,
                            finals=frozenset(finals), map=tuple(table))
    return CharDFA.from_fsm(fsm, False)


class ZeroFraction(Node):
    """`.` and one or more zeros: the tail that makes an integer's text an integral float (`1.0`, `1.00`)."""

    __slots__ = ()

    def entry(self):
        return (self, 0)

    def moves(self, frame):
        return {0x2E: (self, 1)} if frame[1] == 0 else {0x30: (self, 2)}

    def epsilon(self, frame):
        return ((POP,),) if frame[1] == 2 else ()

    def exit_bytes(self, frame, child_exit):
        return (2, 1, 0)[frame[1]]


def integer_by_value(integer_node: Node, done: Node) -> Node:
    """An integer in JSON Schema's sense, as a condition reads it: the integer's own text, or that text with a zero
    fraction (1.0 == 1). NOTE: cheaper than a number node with multipleOf 1 (rational viability per prefix): the
    fraction adds nothing to the value, so the integer node's bounds hold as they are."""
    if integer_node is NEVER:
        return NEVER
    return seq(integer_node, alt([done, ZeroFraction()]))
