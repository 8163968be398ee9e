"""Where a JSON string's length bounds meet its character DFA: does a walk of L characters (lo <= L <= hi) lead from a
DFA state to a final one, and how few JSON bytes can such a walk spell? Cheap for any L up to LENGTH_HORIZON.

Characters cost what their cheapest JSON spelling takes: 1 byte for printable ASCII, 2 for `\\"` `\\\\` and the named
control escapes, 2-4 for raw UTF-8, 6 for `\\u00XX`. With W the (min, +) matrix of one character step (W[s][t] = the
cheapest character from s to t) and f the final states (0, else INF):

    cheapest(s, lo, hi) = (W^lo (x) C_m)(s),   C_m = min over j <= m of W^j (x) f,   m = hi - lo (or infinity)

C_m stops changing after n steps (a shortest path repeats no state). W^lo (x) v is stepped directly for lo up to
DIRECT_LEVELS (the levels cached per m) and by repeated squaring above that, for DFAs of at most MAX_POWER_STATES
states (a plain string has 1); a larger DFA with a longer bound is a ConstraintTooComplexError. Existence is the same
question (a finite cost).

NOTE: one StringWalks per CharDFA, shared by every constraint that uses the DFA (compiled leaves are cached across
schemas): everything it memoizes is a pure function of the DFA, and every table is published whole, never mutated.
"""

from __future__ import annotations

import bisect

import numpy as np

from ...errors import ConstraintTooComplexError
from ..regex import CharDFA

# Longest length / count a schema may require (longer ones are refused, see compiler._count). No output comes near it:
# a budget past 2**31 tokens of 2**16 bytes each does not exist, and costs stay exact in int64 (6 * 2**48 << 2**61).
LENGTH_HORIZON = 1 << 48
# Levels of W^k (x) C_m computed one step at a time before repeated squaring takes over; they are cached while
# levels x states stays within DIRECT_CELLS int64 (8 MB), else recomputed per query.
DIRECT_LEVELS = 1024
DIRECT_CELLS = 1 << 20
# Cells all cached level tables of one DFA may hold together (32 MB): the DFA is shared by every schema using its
# pattern, and each (maxLength - minLength) window has its own table, so a stream of schemas could otherwise grow it.
MAX_CACHED_CELLS = 1 << 22
# Largest DFA that repeated squaring takes on: an (n, n, n) int64 temporary per product, ~48 products per length.
MAX_POWER_STATES = 64
INF = 1 << 61  # INF + INF still fits in int64

_NAMED_ESCAPES = (0x08, 0x09, 0x0A, 0x0C, 0x0D)  # \b \t \n \f \r: 2 bytes; other controls take \u00XX
# (cost, code point ranges) from cheapest to dearest; a character's cheapest JSON spelling.
_TIERS = (
    (1, ((0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7F))),
    (2, ((0x08, 0x0A), (0x0C, 0x0D), (0x22, 0x22), (0x5C, 0x5C), (0x80, 0x7FF))),
    (3, ((0x800, 0xD7FF), (0xE000, 0xFFFF))),
    (4, ((0x10000, 0x10FFFF),)),
    (6, ((0x00, 0x07), (0x0B, 0x0B), (0x0E, 0x1F))),
)
# With an ASCII-only else symbol (see structgen.fsm.regex) it stands for printable ASCII alone.
_ASCII_TIERS = (
    (1, ((0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7E))),
    (2, ((0x22, 0x22), (0x5C, 0x5C))),
)


def char_cost(cp: int) -> int | None:
    """Bytes of the shortest JSON spelling of code point `cp` inside a string (None: a surrogate, not spellable)."""
    if cp == 0x22 or cp == 0x5C:
        return 2
    if cp < 0x20:
        return 2 if cp in _NAMED_ESCAPES else 6
    if cp < 0x80:
        return 1
    if cp < 0x800:
        return 2
    if 0xD800 <= cp <= 0xDFFF:
        return None
    return 3 if cp < 0x10000 else 4


def walks_of(dfa: CharDFA) -> StringWalks:
    """The (memoized) StringWalks of `dfa`."""
    w = dfa.derived.get("json_walks")
    if w is None:
        w = dfa.derived["json_walks"] = StringWalks(dfa)
    return w


class StringWalks:
    """Length-bounded walks through one CharDFA, with JSON byte costs."""

    def __init__(self, dfa: CharDFA):
        self.n = n = dfa.num_states
        sym_cost = _symbol_costs(dfa)
        best: dict[tuple[int, int], int] = {}
        for s, row in enumerate(dfa.rows()):
            for sym, t in row.items():
                c = sym_cost.get(sym)
                if c is not None and c < best.get((s, t), INF):
                    best[(s, t)] = c
        edges = sorted(best.items())
        self._src = np.array([s for (s, _), _ in edges], dtype=np.int64)  # (E,) sorted
        self._dst = np.array([t for (_, t), _ in edges], dtype=np.int64)  # (E,)
        self._w = np.array([c for _, c in edges], dtype=np.int64)  # (E,)
        self._has_out = np.zeros(n, dtype=bool)  # (n,)
        self._has_out[self._src] = True
        self._starts = np.searchsorted(self._src, np.flatnonzero(self._has_out))  # segment starts in the edge list
        self._final = np.full(n, INF, dtype=np.int64)  # (n,) f
        self._final[list(dfa.finals)] = 0
        self._windows: dict = {}  # m (None = infinity) -> C_m, (n,) int64
        self._levels: dict = {}  # m -> (k, n) int64: row j = W^j (x) C_m
        self._powers: list = []  # W^(2^i), (n, n) int64
        self._cycle: np.ndarray | None = None

    # ---- queries -------------------------------------------------------------------------------------------

    def cheapest(self, s: int, lo: int, hi: int | None) -> int | None:
        """Fewest bytes over walks of lo..hi characters (hi None = no upper bound) from state `s` to a final state;
        None if there is none."""
        lo = max(lo, 0)
        if hi is not None and hi < lo:
            return None
        v = self._after(lo, None if hi is None else hi - lo)
        c = int(v[s])
        return None if c >= INF else c

    def exists(self, s: int, lo: int, hi: int | None) -> bool:
        """Whether some walk of lo..hi characters (hi None = unbounded) leads from `s` to a final state."""
        if hi is None and lo >= self.n:
            # NOTE: a walk of >= n characters repeats a state, and pumping that cycle makes it as long as wanted: walks of
            # every length >= n exist iff a cycle of states that can finish is reachable.
            return bool(self._reaches_cycle()[s])
        return self.cheapest(s, lo, hi) is not None

    # ---- tables ----------------------------------------------------------------------------------------------

    def _reaches_cycle(self) -> np.ndarray:
        """(n,) bool: states that can finish and reach a cycle of states that can finish (so finish after a walk
        of any length)."""
        hit = self._cycle
        if hit is None:
            can_finish = self._window(None) < INF  # (n,)
            keep = can_finish[self._src] & can_finish[self._dst]  # (E,) edges inside the states that can finish
            src, dst = self._src[keep].tolist(), self._dst[keep].tolist()
            # Peel off the states that reach no cycle, from the sinks up (Kahn's algorithm on out-degrees).
            out_deg = np.bincount(np.asarray(src, dtype=np.int64), minlength=self.n)
            preds: list[list[int]] = [[] for _ in range(self.n)]
            for a, b in zip(src, dst):
                preds[b].append(a)
            todo = [x for x in range(self.n) if out_deg[x] == 0]
            acyclic = np.zeros(self.n, dtype=bool)
            while todo:
                t = todo.pop()
                acyclic[t] = True
                for a in preds[t]:
                    out_deg[a] -= 1
                    if out_deg[a] == 0:
                        todo.append(a)
            hit = self._cycle = can_finish & ~acyclic
        return hit

    def _step(self, v: np.ndarray) -> np.ndarray:
        """W (x) v: (n,) int64 -> (n,) int64."""
        out = np.full(self.n, INF, dtype=np.int64)
        if self._w.size:
            vals = self._w + v[self._dst]  # (E,)
            out[self._has_out] = np.minimum.reduceat(vals, self._starts)
            np.minimum(out, INF, out=out)
        return out

    def _window(self, m: int | None) -> np.ndarray:
        if m is not None and m >= self.n:
            m = None  # NOTE: a shortest way out repeats no state: n - 1 steps see all of them
        hit = self._windows.get(m)
        if hit is not None:
            return hit
        c = self._final
        steps = 0
        while m is None or steps < m:
            nxt = np.minimum(self._final, self._step(c))
            steps += 1
            if np.array_equal(nxt, c):
                break
            c = nxt
        c.flags.writeable = False
        self._windows[m] = c
        return c

    def _after(self, lo: int, m: int | None) -> np.ndarray:
        """W^lo (x) C_m."""
        if m is not None and m >= self.n:
            m = None
        if lo <= DIRECT_LEVELS:
            if (lo + 1) * self.n > DIRECT_CELLS:
                v = self._window(m)
                for _ in range(lo):
                    v = self._step(v)
                return v
            levels = self._levels.get(m)
            if levels is None or len(levels) <= lo:
                levels = self._extend(m, levels, lo)
            return levels[lo]
        if self.n > MAX_POWER_STATES:
            raise ConstraintTooComplexError(
                f"a string length bound of {lo} characters over a pattern of {self.n} states", DIRECT_LEVELS)
        v = self._window(m)
        for i in range(lo.bit_length()):
            if lo >> i & 1:
                p = self._power(i)
                v = np.minimum((p + v[None, :]).min(axis=1), INF)  # (n,)
        return v

    def _extend(self, m, levels, lo: int) -> np.ndarray:
        rows = [self._window(m)] if levels is None else list(levels)
        target = min(DIRECT_LEVELS, DIRECT_CELLS // self.n - 1, max(lo, 2 * len(rows)))
        while len(rows) <= target:
            rows.append(self._step(rows[-1]))
        out = np.stack(rows)  # (k, n)
        out.flags.writeable = False
        cached = sum(a.size for key, a in self._levels.items() if key != m)
        if cached + out.size <= MAX_CACHED_CELLS:
            self._levels[m] = out
        return out

    def _power(self, i: int) -> np.ndarray:
        powers = self._powers
        if len(powers) > i:
            return powers[i]
        powers = list(powers)
        if not powers:
            w = np.full((self.n, self.n), INF, dtype=np.int64)
            w[self._src, self._dst] = self._w
            powers.append(w)
        while len(powers) <= i:
            p = powers[-1]
            powers.append(np.minimum((p[:, :, None] + p[None, :, :]).min(axis=1), INF))  # (n, n)
        self._powers = powers
        return powers[i]


def _symbol_costs(dfa: CharDFA) -> dict:
    """symbol -> the fewest bytes any character it stands for costs (symbols of no spellable character left out)."""
    explicit = dfa.explicit_code_points
    cost: dict = {}
    for cp in explicit:
        c = char_cost(cp)
        if c is not None:
            sym = dfa.symbol_of(cp)
            if sym is not None and c < cost.get(sym, INF):
                cost[sym] = c
    else_sym = dfa.else_symbol
    if else_sym is not None:
        for c, ranges in (_ASCII_TIERS if dfa.ascii_only_else else _TIERS):
            # a tier counts when one of its characters is not named by the pattern (so reads as the else symbol)
            if any(bisect.bisect_right(explicit, hi) - bisect.bisect_left(explicit, lo) < hi - lo + 1
                   for lo, hi in ranges):
                if c < cost.get(else_sym, INF):
                    cost[else_sym] = c
                break
    return cost
