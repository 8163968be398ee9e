"""Lazy subset construction over a node graph: the `ByteAutomaton` that `schema_automaton` returns.

A *configuration* is `(leaf_frame, continuation)`: a frame that reads bytes, and the stack of frames to
resume after it, as an immutable linked list `(frame, parent)` / None. A *state* is
`(frozenset of configurations, is_final)`. States are built only when decoding (or the token layer) reaches
them; each state's transitions are computed once and memoized.
"""

from __future__ import annotations

import heapq
import itertools
import threading

from ...errors import ConstraintTooComplexError
from .distinct import DistinctValues
from .nodes import GOTO, POP, PUSH, Node

# Most frames one shortest-completion search may settle (a number with a huge `minimum` is the costly case).
MAX_EXIT_SEARCH = 200_000
_INF = float("inf")
# The deadline check of the automaton expanding on this thread: the sub-automata of a `Combine` leaf (combine.py) are
# never bound themselves and tick through this one.
_ACTIVE = threading.local()


class SchemaAutomaton:
    """A deterministic byte automaton over a compiled node graph. Thread-compatible, not thread-safe: the
    memo tables grow as states are visited (callers serialize access, as the token layer does)."""

    def __init__(self, root: Node, *, max_states: int, closed_forms: bool = True, run_time_checks: bool = False):
        self._max_states = max_states
        # NOTE: True when the graph holds a unique array (uniqueItems): the cursor then checks items at run time, at
        # the states `has_guards` marks (see "run-time checks" below); the token layer costs nothing extra otherwise.
        self.run_time_checks = run_time_checks
        self._guards: dict = {}  # state -> whether it holds guarded configurations
        self._safe: dict = {}  # state -> DistinctValues.safe
        self._stripped: set = set()  # states made by without_guards (see min_bytes_to_final)
        self._distinct = DistinctValues() if run_time_checks else None
        self._closed_forms = closed_forms  # False: exit costs by search alone (tests compare the two)
        self._check = None  # the deadline check of whoever drives the expansion (see bind_deadline)
        self._moves: dict = {}
        self._local: dict = {}
        self._transitions: dict = {}
        self._exit: dict = {}  # frame -> fewest bytes until it pops (memo of _exit_cost)
        self._cont_exit: dict = {}  # continuation stack -> fewest bytes until all of it pops
        self._exiting: set = set()  # frames whose _exit_cost is being computed (recursion guard)
        configs: set = set()
        final = self._closure(root.entry(), None, configs)
        self._initial = (frozenset(configs), final)

    def bind_deadline(self, check) -> None:
        """Have long expansions call `check()` now and then (it raises to stop them: the token index passes its
        ConstraintTooComplexError deadline check). None unbinds. Not pickled."""
        self._check = check

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_check"] = None
        return state

    def _tick(self) -> None:
        check = self._check if self._check is not None else getattr(_ACTIVE, "check", None)
        if check is not None:
            check()

    @property
    def num_states(self) -> int:
        """States whose transitions have been materialized so far."""
        return len(self._transitions)

    def initial(self):
        return self._initial

    def is_final(self, state) -> bool:
        return state[1]

    def transitions(self, state) -> dict:
        hit = self._transitions.get(state)
        if hit is not None:
            return hit
        if len(self._transitions) >= self._max_states:
            raise ConstraintTooComplexError("automaton states", self._max_states, "max_states / STRUCTGEN_MAX_STATES")
        if self._check is not None:
            _ACTIVE.check = self._check
        self._tick()
        configs = state[0]
        if len(configs) == 1:
            (frame, cont), = configs
            out = {}
            for b, part in self._config_moves(frame, cont).items():
                if part is not None:
                    out[b] = part
        else:
            out = self._merged_moves(configs)
        self._transitions[state] = out
        return out

    def _config_moves(self, frame, cont) -> dict:
        """{byte: (frozenset of configurations, final) or None (nothing survives)} for one configuration.

        NOTE: a leaf sends most bytes to a handful of distinct frames (every plain character of a string to
        the same one), so each distinct successor's closure is computed once and the resulting state
        shared by all of its bytes (the same object: cheaper to hash and to store)."""
        by_next: dict = {}
        out = {}
        for b, nxt in self._frame_moves(frame).items():
            part = by_next.get(nxt, by_next)
            if part is by_next:
                cs: set = set()
                fin = self._closure(nxt, cont, cs)
                part = by_next[nxt] = (frozenset(cs), fin) if cs or fin else None
            out[b] = part
        return out

    def _merged_moves(self, configs) -> dict:
        """transitions() of a state with several configurations: per byte, the union of theirs."""
        per_byte: dict[int, list] = {}
        for i, (frame, cont) in enumerate(configs):
            if i % 64 == 63:
                self._tick()
            for b, part in self._config_moves(frame, cont).items():
                if part is None:
                    continue
                lst = per_byte.get(b)
                if lst is None:
                    per_byte[b] = [part]
                else:
                    lst.append(part)
        out = {}
        merged: dict = {}
        for b, parts in per_byte.items():
            if len(parts) == 1:
                out[b] = parts[0]
                continue
            key = tuple(parts)
            st = merged.get(key)
            if st is None:
                cs: set = set()
                fin = False
                for c, f in parts:
                    cs |= c
                    fin = fin or f
                st = merged[key] = (frozenset(cs), fin)
            out[b] = st
        return out

    def mask_key(self, state, horizon: int):
        """A key equal for states whose tokens of up to `horizon` bytes are allowed alike (see Node.mask_key): the
        token index builds one mask per key. The continuations stay exact; only leaf frames may stand in."""
        configs, final = state
        return (frozenset((frame[0].mask_key(frame, horizon), cont) for frame, cont in configs), final)

    def min_bytes_to_final(self, state) -> int:
        """The fewest bytes that take `state` to a final state (0 if it is final).

        NOTE: a configuration's frames complete one after another and independently of each other, so its
        distance is the leaf's shortest way out plus each continuation frame's, each memoized per frame; a
        state (a set of configurations) is as close as its closest configuration."""
        if state[1]:
            return 0
        if self._stripped and state in self._stripped:
            # NOTE: a leaf left by without_guards may still be able to pop, into the configurations that were dropped:
            # its own exit cost would count that way out. Every configuration left reads a byte first, so one step here.
            return 1 + min(self.min_bytes_to_final(t) for t in self.transitions(state).values())
        if self._check is not None:
            _ACTIVE.check = self._check
        best = _INF
        for frame, cont in state[0]:
            best = min(best, self._exit_cost(frame) + self._cont_cost(cont))
        if best == _INF:
            raise ValueError("state has no way to a final state (automaton invariant broken)")
        return int(best)

    def _cont_cost(self, cont) -> float:
        if cont is None:
            return 0
        hit = self._cont_exit.get(cont)
        if hit is None:
            hit = self._cont_exit[cont] = self._exit_cost(cont[0]) + self._cont_cost(cont[1])
        return hit

    def _exit_cost(self, frame) -> float:
        """Fewest bytes from `frame` until it pops (inf if it never can): Dijkstra over the frames of its own
        level (a byte costs 1, GOTO 0, a PUSH the child's own exit cost, computed recursively)."""
        hit = self._exit.get(frame)
        if hit is not None:
            return hit
        if frame in self._exiting:
            # NOTE: recursion through $ref is unrolled, so a frame never needs itself; a cycle only means this
            # path is not the shortest.
            return _INF
        self._exiting.add(frame)
        try:
            best = self._search_exit(frame)
        finally:
            self._exiting.discard(frame)
        self._exit[frame] = best
        return best

    def _search_exit(self, start) -> float:
        # NOTE: a tick per search as well as per 256 frames settled in it: one exit cost can recurse into thousands
        # of small searches (an object of 5000 optional properties: 10k searches of a few frames, 90 s in all),
        # none of which would reach its own 256th frame.
        self._tick()
        tie = itertools.count()
        heap = [(0, next(tie), start)]
        settled: set = set()
        while heap:
            d, _, f = heapq.heappop(heap)
            if f is None:
                return d  # the pop marker: nothing left in the heap is closer
            if f in settled:
                continue
            settled.add(f)
            if len(settled) > MAX_EXIT_SEARCH:
                raise ConstraintTooComplexError("frames searched for the shortest completion", MAX_EXIT_SEARCH)
            if len(settled) % 256 == 0:
                self._tick()
            closed = self._closed_exit(f)
            if closed is not None:
                # NOTE: a node that counts (string length, items, properties) knows its own shortest way out; searching
                # it frame by frame would visit every count up to the bound (minLength 1e9: 1e9 frames).
                if closed != _INF:
                    heapq.heappush(heap, (d + closed, next(tie), None))
                continue
            for act in f[0].epsilon(f):
                kind = act[0]
                if kind == POP:
                    heapq.heappush(heap, (d, next(tie), None))
                elif kind == GOTO:
                    if act[1] not in settled:
                        heapq.heappush(heap, (d, next(tie), act[1]))
                elif kind == PUSH:
                    c = self._exit_cost(act[1])
                    if c != _INF and act[2] not in settled:
                        heapq.heappush(heap, (d + c, next(tie), act[2]))
            seen_next = set()
            for nxt in self._frame_moves(f).values():
                if nxt not in settled and nxt not in seen_next:
                    seen_next.add(nxt)
                    heapq.heappush(heap, (d + 1, next(tie), nxt))
        return _INF

    def _closed_exit(self, frame):
        """The node's closed form of the frame's exit cost, or None where the search has to walk it."""
        if not self._closed_forms:
            return None
        fn = getattr(frame[0], "exit_bytes", None)
        return None if fn is None else fn(frame, self._exit_cost)

    # -------------------------------------------------------------------------------- run-time checks
    # A configuration whose leaf is a unique array's POST frame with nothing read is *guarded*: the byte just read
    # completed an item of that array, which is the innermost open JSON container (JSON text parses one way, so every
    # configuration of a state agrees on that). The cursor keeps the configuration only if the item differs from the
    # array's earlier items; the transitions here assume it does (a superset of what any request may read).

    def has_guards(self, state) -> bool:
        """Whether `state` holds guarded configurations (they all wait after the same item)."""
        hit = self._guards.get(state)
        if hit is None:
            hit = self._guards[state] = any(_guarded(leaf) for leaf, _ in state[0])
        return hit

    def without_guards(self, state):
        """`state` less its guarded configurations (what is left when the item just read repeats an earlier one), or
        None when nothing is left."""
        kept = frozenset(c for c in state[0] if not _guarded(c[0]))
        if not kept and not state[1]:
            return None
        out = (kept, state[1])
        if out != state:
            self._stripped.add(out)
        return out

    def safe(self, state) -> bool:
        """Whether `state` can complete whatever earlier items its open unique arrays hold (distinct.py): from such a
        state the cursor needs no search."""
        hit = self._safe.get(state)
        if hit is None:
            hit = self._safe[state] = state[1] or self._distinct is None or self._distinct.safe(state[0])
        return hit

    # ------------------------------------------------------------------------------------- internals
    def _frame_moves(self, frame) -> dict:
        mv = self._moves.get(frame)
        if mv is None:
            mv = self._moves[frame] = frame[0].moves(frame)
        return mv

    def _local_closure(self, frame):
        """Everything `frame` reaches without reading a byte or popping past its own level:
        (leaves: tuple of (leaf_frame, pushed resume frames, innermost last), can_pop)."""
        hit = self._local.get(frame)
        if hit is not None:
            return hit
        leaves = []
        can_pop = False
        seen = set()
        todo = [(frame, ())]
        while todo:
            item = todo.pop()
            if item in seen:
                continue
            seen.add(item)
            if len(seen) % 256 == 0:
                self._tick()
            f, pushed = item
            if getattr(f[0], "always_reads", False) or self._frame_moves(f):
                leaves.append(item)
            for act in f[0].epsilon(f):
                kind = act[0]
                if kind == POP:
                    if pushed:
                        todo.append((pushed[-1], pushed[:-1]))
                    else:
                        can_pop = True
                elif kind == GOTO:
                    todo.append((act[1], pushed))
                elif kind == PUSH:
                    todo.append((act[1], pushed + (act[2],)))
        out = (tuple(leaves), can_pop)
        self._local[frame] = out
        return out

    def _closure(self, frame, cont, out: set) -> bool:
        """Add the configurations `frame` (running on stack `cont`) reaches without reading to `out`;
        return True iff it can complete the whole input."""
        final = False
        while True:
            leaves, can_pop = self._local_closure(frame)
            for leaf, pushed in leaves:
                c = cont
                for r in pushed:
                    c = (r, c)
                out.add((leaf, c))
            if not can_pop:
                return final
            if cont is None:
                return True
            frame, cont = cont


def _guarded(leaf) -> bool:
    check = getattr(leaf[0], "guarded", None)
    return check is not None and check(leaf)
