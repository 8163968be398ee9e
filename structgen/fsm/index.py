"""The token-level index: a ByteAutomaton x a Vocabulary, grown lazily as decoding reaches new states.

States are numbered in the order they are reached (0 = initial). A state's byte transitions are materialized
into one growing table `T` (n_states x 256, int32, -1 = dead) on first need; a state's token mask is built on
first need by walking the vocabulary's prefix trie through `T` (natively, trie_walk.c via native.py, or with numpy
level by level where the native walker is unavailable), and kept. States whose automaton gives them equal mask keys
(a counted string far from its bounds, at any count) share one mask, built once.

Thread safety: one index is shared by every request using its constraint. Growth (numbering, materializing,
building a mask) happens under `_lock`; readers only ever look at rows that were complete before they were
published (a row is written before its `_materialized` flag, a mask before it enters `_masks`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Hashable

import numpy as np

from ..errors import ConstraintTooComplexError
from . import bitmask, native
from .automaton import ByteAutomaton
from .token_trie import expand_ranges, trie_of
from .vocab import Vocabulary

DEAD = -1
# _only_byte values besides a byte 0..255:
_MANY_BYTES = -1  # several bytes continue
_NO_BYTES = -2  # nothing continues (only EOS, the state is final)
# A forced run longer than this is cut (the rest is offered again from where it stopped).
MAX_FORCED_BYTES = 4096
_NO_DEADLINE = float("inf")
# Walk the whole trie at once when the live first bytes lead to more than this share of its nodes.
_DENSE_SHARE = 0.25
# State numbers are packed as (state << 8 | byte) into int32 when walking the table.
MAX_STATES_LIMIT = (1 << 23) - 1
# Default of `max_table_bytes` (CompileLimits.max_table_bytes / STRUCTGEN_MAX_TABLE_MB has the same default): about
# 500k table rows or 85k masks of a 49k vocabulary; tables growing past it while decoding fail that request alone.
DEFAULT_MAX_TABLE_BYTES = 512 << 20
# Rough bytes per numbered state besides its table row (its key in `_ids`, its automaton state object).
_STATE_OVERHEAD_BYTES = 200


class TokenIndex:
    """Token-level transitions and masks of one automaton over one vocabulary.

    Args:
        automaton: the byte automaton (its states must be hashable; for the disk cache, picklable).
        vocab: the tokenizer's vocabulary view.
        max_states: most states this index may number before ConstraintTooComplexError.
        timeout_s: most seconds one mask build (or compile, see `build_initial`) may take; long expansions inside the
            automaton check it too where the automaton offers `bind_deadline` (the JSON Schema automaton does).
        max_table_bytes: most bytes the tables, masks and numbered states (`nbytes`) may grow to before
            ConstraintTooComplexError.
    """

    _INITIAL_CAPACITY = 64

    def __init__(self, automaton: ByteAutomaton, vocab: Vocabulary, *, max_states: int, timeout_s: float,
                 max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES):
        if max_states < 1:
            raise ValueError(f"max_states must be >= 1, got {max_states}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_states > MAX_STATES_LIMIT:
            raise ValueError(f"max_states must be <= {MAX_STATES_LIMIT}, got {max_states}")
        if max_table_bytes < 1:
            raise ValueError(f"max_table_bytes must be >= 1, got {max_table_bytes}")
        self.automaton = automaton
        self.vocab = vocab
        self.max_states = int(max_states)
        self.timeout_s = float(timeout_s)
        self.max_table_bytes = int(max_table_bytes)
        self._lock = threading.RLock()
        self._states: list[Hashable] = []
        self._ids: dict[Hashable, int] = {}
        cap = self._INITIAL_CAPACITY
        self._table = np.full((cap, 256), DEAD, dtype=np.int32)  # (cap, 256) next state per byte
        self._materialized = np.zeros(cap, dtype=bool)  # (cap,)
        self._final = np.zeros(cap, dtype=bool)  # (cap,)
        self._only_byte = np.full(cap, _MANY_BYTES, dtype=np.int16)  # (cap,) see _MANY_BYTES / _NO_BYTES
        self._masks: dict[int, np.ndarray] = {}  # state -> (num_words,) int32, read-only (states may share one)
        self._masks_by_key: dict = {}  # the automaton's mask key -> the mask of the states with that key
        self._mask_arrays = 0  # distinct arrays in _masks (what their bytes are counted by)
        self._version = 0  # bumped on every growth; the disk cache saves when it moved
        self._deadline = _NO_DEADLINE
        self._bind_automaton()
        with self._lock:
            self._number(automaton.initial())

    # ---- queries (cheap once built) ----------------------------------------------------------------------

    initial: int = 0

    @property
    def num_states(self) -> int:
        """States materialized so far (byte transitions known)."""
        return int(np.count_nonzero(self._materialized[: len(self._states)]))

    @property
    def num_masks(self) -> int:
        return len(self._masks)

    @property
    def nbytes(self) -> int:
        """Bytes of the tables and masks built so far, plus a rough 200 bytes per numbered automaton state."""
        return self._nbytes(len(self._table), self._mask_arrays, len(self._states))

    def _nbytes(self, rows: int, masks: int, states: int) -> int:
        per_row = self._table.itemsize * 256 + 1 + 1 + 2  # table row, _materialized, _final, _only_byte
        return rows * per_row + masks * self.vocab.num_words * 4 + _STATE_OVERHEAD_BYTES * states

    def _check_bytes(self, rows: int, masks: int, states: int) -> None:
        if self._nbytes(rows, masks, states) > self.max_table_bytes:
            raise ConstraintTooComplexError(
                f"bytes of the constraint's token tables and masks ({rows} table rows, {masks} masks)",
                self.max_table_bytes, "STRUCTGEN_MAX_TABLE_MB")

    def _bind_automaton(self) -> None:
        self._init_checks()
        # NOTE: the automaton checks this index's deadline inside its own long loops (a state with thousands of
        # configurations, a shortest-completion search), so one expansion cannot run past timeout_s unnoticed.
        bind = getattr(self.automaton, "bind_deadline", None)
        if callable(bind):
            bind(self._check_deadline)

    @property
    def version(self) -> int:
        return self._version

    def is_final(self, state: int) -> bool:
        return bool(self._final[state])

    def is_terminated(self, state: int) -> bool:
        """Final and no byte can follow: only EOS is left."""
        self._ensure_materialized(state)
        return bool(self._final[state]) and int(self._only_byte[state]) == _NO_BYTES

    def mask(self, state: int) -> np.ndarray:
        """The (num_words,) int32 read-only bitmask row of `state` (built on first call)."""
        m = self._masks.get(state)
        if m is None:
            m = self._build_mask_locked(state)
        return m

    def next_state(self, state: int, token_id: int) -> int:
        """The state after `token_id`, or DEAD if the token is not allowed. EOS is not handled here."""
        if not 0 <= token_id < len(self.vocab.token_bytes):
            return DEAD
        data = self.vocab.token_bytes[token_id]
        if not data:
            return DEAD  # special / added / EOS / unused ids
        return self.walk_bytes(state, data)

    def walk_bytes(self, state: int, data: bytes) -> int:
        """The state after reading raw `data` from `state` (DEAD if it leaves the language)."""
        s = state
        for byte in data:
            if not self._materialized[s]:
                self._ensure_materialized(s)
            s = int(self._table[s, byte])
            if s < 0:
                return DEAD
        return s

    def forced_run(self, state: int) -> tuple[bytes, int]:
        """Bytes that are the only continuation from `state` (stopping at a final state), and the state after."""
        out = bytearray()
        s = state
        while not self._final[s] and len(out) < MAX_FORCED_BYTES:
            self._ensure_materialized(s)
            b = int(self._only_byte[s])
            if b < 0:
                break
            out.append(b)
            s = int(self._table[s, b])
        return bytes(out), s

    def successors(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """Every token allowed in `state` (EOS excluded) and the state it leads to: ((n,) int32 ids, (n,) int32
        states), in no particular order. Walks the whole trie once (like a mask build; not cached here)."""
        with self._growing():
            self._materialize(state)
            ids, states = [], []
            trie = self._trie
            walker = native.walker_for(trie) if trie.depth else None
            if walker is not None:
                return walker.walk(state, self._native_tables, self._materialize_states, successors=True)
            if trie.depth:
                self._walk_sparse(trie, self._table[state][trie.byte[0]], ids, states)
        if not ids:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
        return np.concatenate(ids).astype(np.int32), np.concatenate(states)

    def byte_row(self, state: int) -> np.ndarray:
        """The (256,) int32 next state per byte of `state` (DEAD = rejected), materialized on first need.
        A view into the table: read it before anything else grows the index."""
        self._ensure_materialized(state)
        return self._table[state]

    def automaton_state(self, state: int):
        """The automaton's own state object behind state number `state`."""
        return self._states[state]

    def growing(self, deadline: float | None = None):
        """Hold the index's lock and time budget (timeout_s from now unless nested) for work that grows it or
        its companions (see structgen/fsm/budget.py); raises nothing itself, see check_deadline."""
        return self._growing(deadline)

    def check_deadline(self) -> None:
        """ConstraintTooComplexError once the current growth step has run past its time budget."""
        self._check_deadline()

    # ---- growth (under the lock) -------------------------------------------------------------------------

    def build_initial(self, deadline: float) -> None:
        """Build the initial state's mask within `deadline` (time.monotonic()): what "compile" means."""
        self._compile_budget_s = max(deadline - time.monotonic(), 0.0)
        with self._growing(deadline):
            self._build_mask(self.initial)

    @contextlib.contextmanager
    def _growing(self, deadline: float | None = None):
        """Hold the lock for a growth step. The outermost holder sets the time budget (`timeout_s` from now,
        or `deadline`); nested steps (a mask build materializing states) share it."""
        with self._lock:
            outer = self._deadline == _NO_DEADLINE
            if outer:
                self._deadline = deadline if deadline is not None else time.monotonic() + self.timeout_s
                self._deadline_is_compile = deadline is not None
            try:
                yield
            finally:
                if outer:
                    self._deadline = _NO_DEADLINE

    def _ensure_materialized(self, state: int) -> None:
        if self._materialized[state]:
            return
        with self._growing():
            self._materialize(state)

    def _build_mask_locked(self, state: int) -> np.ndarray:
        with self._growing():
            return self._build_mask(state)

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            if getattr(self, "_deadline_is_compile", False):  # build_initial: the compile's own time limit
                raise ConstraintTooComplexError("compile time (s)", round(self._compile_budget_s, 3),
                                                "STRUCTGEN_COMPILE_TIMEOUT_S")
            # A state reached while decoding: its own, shorter limit (every other request waits for it).
            raise ConstraintTooComplexError("time to build one state reached while decoding (s)", self.timeout_s,
                                            "STRUCTGEN_EXPAND_TIMEOUT_S")

    def _grow(self, need: int) -> None:
        cap = self._table.shape[0]
        if need <= cap:
            return
        new_cap = max(need, min(cap * 2, self.max_states))
        per_row = self._table.itemsize * 256 + 4
        room = (self.max_table_bytes - self._nbytes(0, self._mask_arrays, len(self._states) + 1)) // per_row
        new_cap = max(need, min(new_cap, room))  # doubling stops at the byte limit rather than failing there
        table = np.full((new_cap, 256), DEAD, dtype=np.int32)
        table[:cap] = self._table
        materialized = np.zeros(new_cap, dtype=bool)
        materialized[:cap] = self._materialized
        final = np.zeros(new_cap, dtype=bool)
        final[:cap] = self._final
        only = np.full(new_cap, _MANY_BYTES, dtype=np.int16)
        only[:cap] = self._only_byte
        # NOTE: publish the table before the flags: a reader that sees a flag finds its row in the table.
        self._table, self._final, self._only_byte = table, final, only
        self._materialized = materialized

    def _number(self, state: Hashable) -> int:
        sid = self._ids.get(state)
        if sid is not None:
            return sid
        sid = len(self._states)
        if sid >= self.max_states:
            raise ConstraintTooComplexError("automaton states", self.max_states, "STRUCTGEN_MAX_STATES")
        self._check_bytes(max(len(self._table), sid + 1), self._mask_arrays, sid + 1)
        self._grow(sid + 1)
        self._final[sid] = bool(self.automaton.is_final(state))
        self._states.append(state)
        self._ids[state] = sid
        self._version += 1
        return sid

    def _materialize(self, sid: int) -> None:
        if self._materialized[sid]:
            return
        self._check_deadline()
        trans = self.automaton.transitions(self._states[sid])
        ids = self._ids
        nexts = []
        for nxt in trans.values():
            n = ids.get(nxt)
            nexts.append(self._number(nxt) if n is None else n)
        n = len(trans)
        if n:
            # NOTE: numbering above may have grown (replaced) the table: write into the current one.
            self._table[sid, list(trans)] = nexts  # the rest of the row is DEAD since the row was allocated
        self._only_byte[sid] = _NO_BYTES if n == 0 else (next(iter(trans)) if n == 1 else _MANY_BYTES)
        self._materialized[sid] = True
        self._version += 1

    @property
    def _trie(self):
        return trie_of(self.vocab)  # built once per vocabulary, shared by every index

    def _native_tables(self) -> tuple[np.ndarray, np.ndarray]:
        return self._table, self._materialized

    def _materialize_states(self, states: np.ndarray) -> None:
        """Materialize each of (n,) distinct states (the native walk's pending ones), then check the deadline."""
        for s in states.tolist():
            self._materialize(s)
        self._check_deadline()

    def _materialize_all(self, states: np.ndarray) -> None:
        known = self._materialized[states]  # (n,)
        if not known.all():
            for s in np.unique(states[~known]).tolist():
                self._materialize(s)
        self._check_deadline()

    def _walk_dense(self, trie, first: np.ndarray, allowed: list) -> None:
        """Every node of every level at once (most of the vocabulary is alive: string states).
        Dead nodes carry DEAD and are routed to a DEAD cell, so no compaction is needed."""
        cur = first  # (n_1,) int32 state per level-1 node, DEAD if dead
        for level in range(trie.tail_from):
            if level:
                ps = cur[trie.parent[level]]  # (n_d,) parent's state
                live = ps >= 0
                self._materialize_all(ps[live])
                flat = self._table.reshape(-1)  # (cap * 256,) re-read: materializing may have grown the table
                # NOTE: a dead parent reads cell 0 of row 0, whatever it holds; np.where puts DEAD back.
                cur = np.where(live, flat[(np.maximum(ps, 0) << 8) | trie.byte[level]], DEAD)  # (n_d,)
            if trie.end_ids[level].size:
                allowed.append(trie.end_ids[level][cur[trie.end_node[level]] >= 0])
            if not (cur >= 0).any():
                return
        self._walk_tail(trie, cur.tolist(), allowed)

    def _walk_tail(self, trie, cur: list, allowed: list) -> None:
        """The deep, sparse levels of the trie, node by node (see TokenTrie.tail)."""
        rows: dict[int, list] = {}
        ids = []
        for parents, data, end_node, end_ids in trie.tail:
            nxt = []
            for p, b in zip(parents, data):
                s = cur[p]
                if s < 0:
                    nxt.append(DEAD)
                    continue
                row = rows.get(s)
                if row is None:
                    if not self._materialized[s]:
                        self._materialize(s)
                    row = rows[s] = self._table[s].tolist()
                nxt.append(row[b])
            cur = nxt
            ids += [t for n, t in zip(end_node, end_ids) if cur[n] >= 0]
            if max(cur, default=DEAD) < 0:
                break
        if ids:
            allowed.append(np.asarray(ids, dtype=np.int32))

    def _walk_sparse(self, trie, first: np.ndarray, allowed: list, ends_at: list | None = None,
                     crossed: list | None = None) -> None:
        """Only the live nodes, level by level (structural states: a few first bytes). With `ends_at`, the
        state each allowed token ends in goes there (one array per array appended to `allowed`); with `crossed`,
        whether its path entered a guarded state (see `guarded`) after some byte, likewise."""
        nodes = np.flatnonzero(first >= 0)  # (n,) live level-1 nodes
        cur = first[nodes]  # (n,) their states
        flags = self._guard_flags(cur) if crossed is not None else None  # (n,) bool
        level = 0
        while nodes.size:
            ends = trie.end_start[level]
            if trie.end_ids[level].size:
                lo, hi = ends[nodes], ends[nodes + 1]  # (n,) each live node's range of ending tokens
                allowed.append(trie.end_ids[level][expand_ranges(lo, hi)])
                if ends_at is not None:
                    ends_at.append(np.repeat(cur, hi - lo).astype(np.int32))
                if crossed is not None:
                    crossed.append(np.repeat(flags, hi - lo))
            if level + 1 == trie.depth:
                break
            starts = trie.child_start[level]
            lo, hi = starts[nodes], starts[nodes + 1]  # (n,) child ranges at the next level
            has = hi > lo
            if not has.all():
                lo, hi, cur = lo[has], hi[has], cur[has]
                if flags is not None:
                    flags = flags[has]
            if not lo.size:
                break
            self._materialize_all(cur)
            children = expand_ranges(lo, hi)  # (c,) next-level nodes
            parent_state = np.repeat(cur, hi - lo)  # (c,)
            flat = self._table.reshape(-1)  # (cap * 256,) re-read: materializing may have grown the table
            level += 1
            nxt = flat[(parent_state << 8) | trie.byte[level][children]]  # (c,) state after the child's byte
            alive = nxt >= 0
            nodes, cur = children[alive], nxt[alive]
            if flags is not None:
                flags = np.repeat(flags, hi - lo)[alive]
                flags |= self._guard_flags(cur)

    def _build_mask(self, state: int) -> np.ndarray:
        """Walk the vocabulary's prefix trie from `state`, level by level; tokens whose node survives are allowed."""
        m = self._masks.get(state)
        if m is not None:
            return m
        v = self.vocab
        key = self._mask_key(state)
        if key is not None:
            shared = self._masks_by_key.get(key)
            if shared is not None:  # e.g. the next character of a long counted string: nothing to walk
                self._masks[state] = shared
                self._version += 1
                return shared
        trie = self._trie
        self._materialize(state)
        walker = native.walker_for(trie) if trie.depth else None
        if walker is not None:
            mask = np.zeros(v.num_words, dtype=bitmask.DTYPE)
            walker.walk(state, self._native_tables, self._materialize_states, mask=mask)
            if self._final[state] and v.eos_token_ids.size:
                mask |= bitmask.pack(v.eos_token_ids, v.vocab_size)
            return self._keep_mask(state, mask, key)
        allowed = []
        if trie.depth:
            first = self._table[state][trie.byte[0]]  # (n_1,) state after each first byte
            if float(trie.top_share[first >= 0].sum()) > _DENSE_SHARE:
                self._walk_dense(trie, first, allowed)
            else:
                self._walk_sparse(trie, first, allowed)
        ids = np.concatenate(allowed) if allowed else np.zeros(0, dtype=np.int32)
        if self._final[state] and v.eos_token_ids.size:
            ids = np.concatenate([ids, v.eos_token_ids])
        return self._keep_mask(state, bitmask.pack(ids, v.vocab_size), key)

    def _keep_mask(self, state: int, mask: np.ndarray, key=None) -> np.ndarray:
        self._check_bytes(len(self._table), self._mask_arrays + 1, len(self._states))
        mask.flags.writeable = False
        self._masks[state] = mask
        self._mask_arrays += 1
        if key is not None:
            self._masks_by_key[key] = mask
        self._version += 1
        return mask

    def _mask_key(self, state: int):
        """The automaton's mask key of `state` (states with equal keys have equal masks), or None without one."""
        key_of = getattr(self.automaton, "mask_key", None)
        return None if key_of is None else key_of(self._states[state], self.vocab.max_token_len)

    # ---- run-time checks (uniqueItems; structgen/fsm/unique_cursor.py) --------------------------------------
    # NOTE: only for automata with `run_time_checks` (the JSON Schema automaton of a schema with uniqueItems); they
    # offer has_guards / without_guards / safe on their states. Tables and masks above assume every check passes.

    def _init_checks(self) -> None:
        self.has_guards = bool(getattr(self.automaton, "run_time_checks", False))
        self._guarded: dict[int, bool] = {}
        self._stripped: dict[int, int] = {}
        self._safe: dict[int, bool] = {}
        self._risky: dict[int, frozenset] = {}
        self._arrivals: dict[tuple, tuple] = {}

    def _flag(self, memo: dict, state: int, ask) -> bool:
        """memo[state], asking the automaton `ask(its state)` once (under the growth lock on a miss)."""
        hit = memo.get(state)
        if hit is None:
            with self._growing():
                hit = self._flag_locked(memo, state, ask)
        return hit

    def _flag_locked(self, memo: dict, state: int, ask) -> bool:
        hit = memo.get(state)
        if hit is None:
            hit = memo[state] = bool(ask(self._states[state]))
        return hit

    def guarded(self, state: int) -> bool:
        """Whether reaching `state` completed an item of a unique array (its guarded configurations wait after it)."""
        return self._flag(self._guarded, state, self.automaton.has_guards)

    def _guarded_locked(self, state: int) -> bool:
        return self._flag_locked(self._guarded, state, self.automaton.has_guards)

    def _guard_flags(self, states: np.ndarray) -> np.ndarray:
        """(n,) bool: `guarded` of each of (n,) int states."""
        if not self.has_guards or not states.size:
            return np.zeros(states.shape, dtype=bool)
        uniq, inverse = np.unique(states, return_inverse=True)
        per = np.fromiter((self._guarded_locked(int(u)) for u in uniq.tolist()), dtype=bool, count=uniq.size)
        return per[inverse.reshape(-1)]

    def stripped(self, state: int) -> int:
        """The state `state` becomes when the item just completed repeats an earlier one: its guarded configurations
        dropped (numbered like any other state), or DEAD when nothing is left."""
        hit = self._stripped.get(state)
        if hit is None:
            with self._growing():
                hit = self._stripped.get(state)
                if hit is None:
                    rest = self.automaton.without_guards(self._states[state])
                    hit = self._stripped[state] = DEAD if rest is None else self._number(rest)
        return hit

    def safe(self, state: int) -> bool:
        """Whether `state` reaches a final state whatever the earlier items of its open unique arrays are."""
        return self._flag(self._safe, state, self.automaton.safe)

    def _safe_locked(self, state: int) -> bool:
        return self._flag_locked(self._safe, state, self.automaton.safe)

    def risky_tokens(self, state: int) -> frozenset:
        """The allowed tokens of `state` (EOS aside) that a run-time check may refuse: their bytes complete an item of a
        unique array on the way, or they end in a state that is not `safe`. Every other allowed token is allowed
        whatever the request wrote before. Built on first need per state (a walk of the trie, like a mask)."""
        hit = self._risky.get(state)
        if hit is None:
            with self._growing():
                hit = self._risky.get(state)
                if hit is None:
                    hit = self._risky[state] = self._build_risky(state)
        return hit

    def arrivals(self, state: int, token_id: int) -> tuple:
        """The positions along `token_id`'s bytes from `state` (assuming every check passes) whose byte enters a guarded
        state: where the cursor checks an item. Memoized per (state, token); for risky tokens."""
        key = (state, token_id)
        hit = self._arrivals.get(key)
        if hit is None:
            with self._growing():
                s, out = state, []
                for i, b in enumerate(self.vocab.token_bytes[token_id]):
                    self._materialize(s)
                    s = int(self._table[s, b])
                    if s < 0:
                        break
                    if self._guarded_locked(s):
                        out.append(i)
                hit = self._arrivals[key] = tuple(out)
        return hit

    def _build_risky(self, state: int) -> frozenset:
        self._materialize(state)
        trie = self._trie
        ids, ends, crossed = [], [], []
        if trie.depth:
            self._walk_sparse(trie, self._table[state][trie.byte[0]], ids, ends, crossed)
        if not ids:
            return frozenset()
        ids_a, ends_a, crossed_a = np.concatenate(ids), np.concatenate(ends), np.concatenate(crossed)
        uniq, inverse = np.unique(ends_a, return_inverse=True)
        unsafe = np.fromiter((not self._safe_locked(int(u)) for u in uniq.tolist()), dtype=bool, count=uniq.size)
        return frozenset(ids_a[crossed_a | unsafe[inverse.reshape(-1)]].tolist())

    # ---- persistence (the disk cache) --------------------------------------------------------------------

    def snapshot(self) -> dict:
        """A picklable copy of everything built so far (the vocabulary is not included: it is re-attached)."""
        with self._lock:
            n = len(self._states)
            return {
                "automaton": self.automaton,
                "states": list(self._states),
                "table": self._table[:n].copy(),
                "materialized": self._materialized[:n].copy(),
                "final": self._final[:n].copy(),
                "only_byte": self._only_byte[:n].copy(),
                "masks": dict(self._masks),
                "fingerprint": self.vocab.fingerprint,
                "vocab_size": self.vocab.vocab_size,
                "version": self._version,
            }

    @classmethod
    def restore(cls, snap: dict, vocab: Vocabulary, *, max_states: int, timeout_s: float,
                max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES) -> "TokenIndex":
        """An index rebuilt from `snapshot()` for the same tokenizer (ValueError if the vocabulary differs)."""
        if snap["fingerprint"] != vocab.fingerprint or snap["vocab_size"] != vocab.vocab_size:
            raise ValueError("snapshot was built for another tokenizer")
        self = cls.__new__(cls)
        self.automaton = snap["automaton"]
        self.vocab = vocab
        self.max_states = max(int(max_states), len(snap["states"]))
        self.timeout_s = float(timeout_s)
        self.max_table_bytes = int(max_table_bytes)  # NOTE: what was built already stays, even past it
        self._lock = threading.RLock()
        self._states = list(snap["states"])
        self._ids = {s: i for i, s in enumerate(self._states)}
        if len(self._ids) != len(self._states):
            raise ValueError("snapshot states are not distinct")
        n = len(self._states)
        cap = max(cls._INITIAL_CAPACITY, n)
        self._table = np.full((cap, 256), DEAD, dtype=np.int32)
        self._table[:n] = snap["table"]
        self._materialized = np.zeros(cap, dtype=bool)
        self._materialized[:n] = snap["materialized"]
        self._final = np.zeros(cap, dtype=bool)
        self._final[:n] = snap["final"]
        self._only_byte = np.full(cap, _MANY_BYTES, dtype=np.int16)
        self._only_byte[:n] = snap["only_byte"]
        self._masks = dict(snap["masks"])
        self._masks_by_key = {}  # NOTE: not saved; states reached after a restore build their keys' masks again
        self._mask_arrays = len({id(m) for m in self._masks.values()})
        words = vocab.num_words
        for m in self._masks.values():
            if m.shape != (words,) or m.dtype != bitmask.DTYPE:
                raise ValueError("snapshot mask has the wrong shape")
            m.flags.writeable = False
        self._version = int(snap["version"])
        self._deadline = _NO_DEADLINE
        self._bind_automaton()
        return self
