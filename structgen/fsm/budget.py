"""How many tokens a state still needs to reach a final state: the bound that budget-aware closing rests on.

`TokenBounds(index).bound(state)` is SAFE (that many tokens always suffice: it is the length of a real token
path to a final state) and CONSISTENT (from a non-final state with bound b some allowed token leads to a state
with bound <= b - 1), so an engine that only samples tokens t with 1 + bound(after t) <= budget always ends in
a final state inside its budget.

How it is computed, per state, memoized (states are numbered by the TokenIndex; all work runs under its lock and
time budget, so a search that runs too long is a ConstraintTooComplexError like a mask build):

1. byte distance d(s): the fewest bytes to a final state. From the automaton when it knows it
   (`min_bytes_to_final`: the JSON Schema automaton's per-frame shortest ways out), else by a shortest-path
   search over the byte table that stops at states whose distance is already known.
2. the canonical shortest completion w(s): from s, the smallest byte that keeps the distance falling by one
   (bytes that are single-byte tokens first). Stepping along it, w(s after b) = w(s)[1:] by construction.
3. greedy token count g(s): the longest token that is a prefix of w(s), then g of the state after it. Because
   w is suffix-closed, g(s after that token) = g(s) - 1 (consistency) and g(s) <= d(s). It fails only where
   w(s) starts with a byte no token spells on its own or in a longer prefix (vocabularies without byte
   tokens: SmolLM2 lacks a few control bytes and the lead bytes 0xF1/0xF2, see `Vocabulary.byte_token_ids`).
4. where g fails, bound(s) is a shortest-path search over token transitions that stops at final states and at
   states whose bound is known or whose g succeeds (their bound added): exact for that definition, so still
   safe and consistent.
5. far states (d(s) > FAR_BYTES: minLength 1e9, minItems 1e6) skip steps 2-4, which walk w(s) and so cost O(d(s)):
   bound(s) = d(s), one single-byte token per byte of a shortest completion. Safe and consistent when the
   canonical next byte b of s is a single-byte token and the state after it has bound <= d(s) - 1 (far: d(s) - 1 by
   this rule; near: checked), which is checked at each far state when its bound is asked for; a far state that fails
   it (a completion that needs a byte no token spells alone) is a ConstraintTooComplexError, never a wrong bound.
   Loose (a string of spaces needs ~1/64 of it with SmolLM2), but every far bound is above any budget there is
   (max_model_len <= 8192 today), so it only decides refusals that are right anyway. Bounds are capped at
   MAX_BOUND: past it no budget comes near either.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import OrderedDict

import numpy as np

from ..errors import ConstraintTooComplexError
from . import bitmask
from .index import DEAD, TokenIndex

# The bound of a state no token path leads out of (only with vocabularies that cannot spell some bytes).
UNREACHABLE = (1 << 31) - 1
# The largest bound of a state that has one (bounds are int32 in the successor tables; no budget comes near).
MAX_BOUND = UNREACHABLE - 1
# Byte distance past which a state's bound is its byte distance (rule 5 above) instead of a walk along its shortest
# completion: that walk materializes a state per byte and numbers ~9 (a 2,048-byte string: ~18k states, ~40 MB of
# index table, ~0.8 s on this machine; 4,096 bytes took 1.5 s and 75 MB).
FAR_BYTES = 2048
# Most states one search (byte or token level) may settle before ConstraintTooComplexError.
MAX_SEARCH_STATES = 50_000
# States whose (ids, bounds) of every allowed token stay cached (up to ~400 KB each on a 49k vocabulary).
SUCCESSOR_CACHE_SIZE = 256
_MISSING = object()


def budget_refusal(need: int, max_tokens: int, room: int) -> str | None:
    """Why a constrained request cannot be served inside its token budget, in words a user can act on, or None when
    its shortest completion (`need` tokens, from Cursor.min_tokens_to_finish) fits min(max_tokens, context room).

    One wording for every API: the engine fails the request with it and the gRPC servicer answers INVALID_ARGUMENT
    with it."""
    budget = min(max_tokens, room)
    if need <= budget:
        return None
    if need >= UNREACHABLE:
        return ("the constraint cannot be completed with this model's tokenizer: no sequence of its tokens spells a "
                "complete match")
    return (f"the constraint needs at least {need} tokens to complete but the budget is {budget} "
            f"(max_tokens={max_tokens}, context room={room})")


class TokenBounds:
    """Token bounds of one TokenIndex (shared by every cursor of its constraint; thread-safe)."""

    def __init__(self, index: TokenIndex):
        self._index = index
        self._vocab = index.vocab
        native = getattr(index.automaton, "min_bytes_to_final", None)
        self._native = native if callable(native) else None
        self._spell = self._vocab.byte_token_ids  # (256,) int32: the single-byte token of each byte, or -1
        self._by_bytes = self._vocab.token_ids_by_bytes
        self._max_len = self._vocab.max_token_len
        self._dist: dict[int, int] = {}  # state -> byte distance
        self._next: dict[int, int] = {}  # non-final state -> the canonical next byte
        self._greedy: dict[int, int | None] = {}  # state -> g(s), None where greedy spelling fails
        self._bound: dict[int, int] = {}
        self._within: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._within_lock = threading.Lock()

    # ---- queries -----------------------------------------------------------------------------------------

    def bound(self, state: int) -> int:
        """Tokens that always suffice from `state` to a final state (0 iff final; UNREACHABLE where no token
        path leads to one). Cached per state."""
        b = self._bound.get(state)
        if b is None:
            with self._index.growing():
                b = self._bound_of(state)
        return b

    def byte_distance(self, state: int) -> int:
        """The fewest bytes from `state` to a final state (0 iff final)."""
        d = self._dist.get(state)
        if d is None:
            with self._index.growing():
                d = self._distance(state)
        return d

    def completion(self, state: int) -> bytes:
        """The canonical shortest completion w(state) (what the bound is counted along)."""
        out = bytearray()
        with self._index.growing():
            s = state
            while not self._index.is_final(s):
                b = self._next_byte(s)
                out.append(b)
                s = int(self._index.byte_row(s)[b])
        return bytes(out)

    def successor_bounds(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """Every token allowed in `state` (EOS excluded) sorted by the bound of the state it leads to:
        ((n,) int32 ids, (n,) int32 bounds, non-decreasing). Cached for the last SUCCESSOR_CACHE_SIZE states."""
        with self._within_lock:
            hit = self._within.get(state)
            if hit is not None:
                self._within.move_to_end(state)
                return hit
        with self._index.growing():
            ids, states = self._index.successors(state)
            uniq, inverse = np.unique(states, return_inverse=True)
            per = np.fromiter((self._bound_of(int(u)) for u in uniq.tolist()), dtype=np.int32, count=uniq.size)
            bounds = per[inverse.reshape(-1)]  # (n,)
            order = np.argsort(bounds, kind="stable")
            out = (ids[order], bounds[order])
        for a in out:
            a.flags.writeable = False
        with self._within_lock:
            self._within[state] = out
            while len(self._within) > SUCCESSOR_CACHE_SIZE:
                self._within.popitem(last=False)
        return out

    def mask_within(self, state: int, budget: int) -> np.ndarray:
        """The (num_words,) int32 mask of tokens that fit `budget` in `state` (EOS: iff final and budget >= 1)."""
        v = self._vocab
        if budget < 1:
            return np.zeros(v.num_words, dtype=bitmask.DTYPE)
        ids, bounds = self.successor_bounds(state)
        if not bounds.size or int(bounds[-1]) <= budget - 1:
            return self._index.mask(state)  # everything fits
        keep = ids[: int(np.searchsorted(bounds, budget - 1, side="right"))]
        if self._index.is_final(state) and v.eos_token_ids.size:
            keep = np.concatenate([keep, v.eos_token_ids])
        return bitmask.pack(keep, v.vocab_size)

    # ---- byte level --------------------------------------------------------------------------------------

    def _distance(self, s: int) -> int:
        d = self._dist.get(s)
        if d is not None:
            return d
        if self._index.is_final(s):
            d = 0
        elif self._native is not None:
            d = int(self._native(self._index.automaton_state(s)))
        else:
            return self._search_bytes(s)
        self._dist[s] = d
        return d

    def _search_bytes(self, start: int) -> int:
        """Shortest byte path from `start` to a final state or a state of known distance; every state on the
        path found gets its (exact) distance."""
        index = self._index
        d = _shortest_to_known(
            start, known_at=lambda s: 0 if index.is_final(s) else self._dist.get(s),
            successors=lambda s: {t for t in index.byte_row(s).tolist() if t != DEAD},
            record=self._dist.setdefault, what="states searched for the shortest completion",
            check_deadline=index.check_deadline, check_every=256)
        if d is None:
            raise ValueError(f"state {start} has no way to a final state (automaton invariant broken)")
        return d

    def _next_byte(self, s: int) -> int:
        """The canonical next byte of non-final `s`: the smallest byte whose successor is one byte closer,
        preferring bytes that are single-byte tokens."""
        b = self._next.get(s)
        if b is not None:
            return b
        want = self._distance(s) - 1
        row = self._index.byte_row(s).tolist()
        dist_of: dict[int, int] = {}
        fallback = -1
        for b, t in enumerate(row):
            if t == DEAD:
                continue
            d = dist_of.get(t)
            if d is None:
                d = dist_of[t] = self._distance(t)
            if d == want:
                if self._spell[b] >= 0:
                    fallback = b
                    break
                if fallback < 0:
                    fallback = b
        if fallback < 0:
            raise ValueError(f"state {s}: no byte moves closer to a final state (automaton invariant broken)")
        self._next[s] = fallback
        return fallback

    # ---- token level -------------------------------------------------------------------------------------

    def _first_token(self, s: int) -> tuple[int, int] | None:
        """The longest token that is a prefix of w(s), and the state after it (None: no token starts w(s))."""
        index = self._index
        limit = min(self._max_len, self._distance(s))
        data = bytearray()
        states = [s]
        x = s
        for _ in range(limit):
            b = self._next_byte(x)
            data.append(b)
            x = int(index.byte_row(x)[b])
            states.append(x)
        by_bytes = self._by_bytes
        for k in range(len(data), 0, -1):
            tid = by_bytes.get(bytes(data[:k]))
            if tid is not None:
                return tid, states[k]
        return None

    def _greedy_count(self, s: int) -> int | None:
        chain = []
        x = s
        while True:
            if self._index.is_final(x):
                val = 0
                break
            hit = self._greedy.get(x, _MISSING)
            if hit is not _MISSING:
                val = hit
                break
            first = self._first_token(x)
            if first is None:
                self._greedy[x] = val = None
                break
            chain.append(x)
            x = first[1]
        for node in reversed(chain):
            val = None if val is None else val + 1
            self._greedy[node] = val
        return val  # chain[0] is s

    def _bound_of(self, s: int) -> int:
        b = self._bound.get(s)
        if b is not None:
            return b
        if self._index.is_final(s):
            b = 0
        elif self._distance(s) > FAR_BYTES:
            b = self._far_bound(s)
        else:
            b = self._greedy_count(s)
            if b is None:
                return self._search_tokens(s)
        self._bound[s] = b
        return b

    def _far_bound(self, s: int) -> int:
        """bound(s) = d(s) for a far state (rule 5 of the module docstring), after checking that it is consistent."""
        d = self._distance(s)
        if d >= MAX_BOUND:
            return MAX_BOUND
        b = self._next_byte(s)
        if self._spell[b] < 0:
            raise ConstraintTooComplexError(f"a token bound for a completion of {d} bytes whose next byte ({b:#04x}) "
                                            "no single token spells", FAR_BYTES)
        nxt = int(self._index.byte_row(s)[b])
        if not self._index.is_final(nxt) and self._distance(nxt) <= FAR_BYTES and self._bound_of(nxt) > d - 1:
            raise ConstraintTooComplexError(f"a token bound for a completion of {d} bytes", FAR_BYTES)
        return d

    def _terminal(self, s: int) -> int | None:
        """The bound of `s` where it is known without a token search (final, cached, far, or greedy spelling)."""
        if self._index.is_final(s):
            return 0
        b = self._bound.get(s)
        if b is not None:
            return b
        if self._distance(s) > FAR_BYTES:
            b = self._bound[s] = self._far_bound(s)
            return b
        g = self._greedy_count(s)
        if g is not None:
            self._bound[s] = g
        return g

    def _search_tokens(self, start: int) -> int:
        """bound(start) where greedy spelling fails: shortest token path to a state whose bound is known
        without a search (its bound added); every state on the path found gets its bound."""
        index = self._index
        d = _shortest_to_known(
            start, known_at=lambda s: self._terminal(s) if s != start else (0 if index.is_final(s) else None),
            successors=lambda s: np.unique(index.successors(s)[1]).tolist(),
            record=self._bound.setdefault, what="states searched for the fewest tokens to finish",
            check_deadline=index.check_deadline, check_every=1)
        if d is not None:
            return d
        # NOTE: the byte automaton is productive, but a vocabulary without some single-byte tokens can strand a
        # token walk (a token that ends where only an unspellable byte continues): no budget is enough there.
        self._bound[start] = UNREACHABLE
        return UNREACHABLE


def _shortest_to_known(start: int, *, known_at, successors, record, what: str, check_deadline,
                       check_every: int) -> int | None:
    """Unit-cost Dijkstra from `start` to the nearest state whose remaining cost is known: `known_at(s)` gives it
    (a final state: 0; UNREACHABLE or None: not a way out). Returns the path length plus that cost, after calling
    `record(state, its remaining cost)` for every state on the path found (exact: a suffix of a shortest path is
    shortest); None when no way out is reachable. Past MAX_SEARCH_STATES states: ConstraintTooComplexError."""
    tie = itertools.count()
    heap = [(0, next(tie), start, False)]       # (cost, tie-break, state, cost is final = reached a known state)
    best = {start: 0}
    parent: dict[int, int] = {}
    settled: set[int] = set()
    while heap:
        d, _, s, done = heapq.heappop(heap)
        if done:
            node = s
            while True:
                record(node, d - best[node])
                if node == start:
                    return d
                node = parent[node]
        if s in settled:
            continue
        settled.add(s)
        if len(settled) > MAX_SEARCH_STATES:
            raise ConstraintTooComplexError(what, MAX_SEARCH_STATES)
        if len(settled) % check_every == 0:
            check_deadline()
        known = known_at(s)
        if known is not None:
            if known < UNREACHABLE:
                heapq.heappush(heap, (d + known, next(tie), s, True))
            continue
        for t in successors(s):
            if t not in settled and d + 1 < best.get(t, d + 2):
                best[t], parent[t] = d + 1, s
                heapq.heappush(heap, (d + 1, next(tie), t, False))
    return None
