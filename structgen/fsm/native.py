"""The native trie walker (trie_walk.c): a state's mask and successor map from the token index's byte tables.

The token index (index.py) keeps building byte states lazily in Python; this walks what is built without calling
back, and hands back the (trie node, state) pairs whose state still has to be materialized: the index materializes
them and the walk resumes from there (one round per depth at which new states appear, usually one or two).

Built like the CPU kernels (structgen/native_build.py), into `<STRUCTGEN_CACHE_DIR>/fsm/`. `walker_for(trie)`
returns None where the library cannot be built or STRUCTGEN_NATIVE_MASKS=0; the index then walks with numpy
(the reference the tests compare this with).
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import native_build
from .token_trie import TokenTrie

SOURCES = [Path(__file__).with_name("trie_walk.c")]
CFLAGS = ["-O3", "-fPIC", "-shared"]
LIB_PREFIX = "structgen_fsm-"


def _load(path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, n = ctypes.c_void_p, ctypes.c_long
    lib.trie_walk.argtypes = [p] * 7 + [p, p, n] + [p] + [p, p, p, n] + [p, p, n] + [p] * 4
    lib.trie_walk.restype = n
    return lib


_LIBRARY = native_build.NativeLibrary("native mask walker", "masks are built with numpy (slower)",
                                      "STRUCTGEN_NATIVE_MASKS", _load, SOURCES, [], CFLAGS, subdir="fsm",
                                      prefix=LIB_PREFIX)
_lock = threading.Lock()  # guards _walkers


def library() -> ctypes.CDLL | None:
    """The loaded walker, built on the first call; None where it cannot run (see unavailable_reason())."""
    return _LIBRARY.get()


def unavailable_reason() -> str | None:
    return _LIBRARY.reason()


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


@dataclass
class _Scratch:
    pairs: tuple  # two (node, state) int32 buffer pairs of the trie's size: this round's work, the next round's
    depth_state: np.ndarray
    depth_pure: np.ndarray
    busy: bool = False

    def __post_init__(self):
        self.depth_state_ptr, self.depth_pure_ptr = _ptr(self.depth_state), _ptr(self.depth_pure)
        self.pair_ptrs = tuple((_ptr(a), _ptr(b)) for a, b in self.pairs)
        self._seen: dict[int, tuple[weakref.ref, int]] = {}

    def ptr(self, a: np.ndarray) -> int:
        """a's data pointer, remembered for the last few arrays (an index's table only moves when it grows).
        NOTE: by weak reference, checked on every hit: an old table is not kept alive, and a reused id is caught."""
        hit = self._seen.get(id(a))
        if hit is not None and hit[0]() is a:
            return hit[1]
        if len(self._seen) >= 16:
            self._seen.clear()
        p = _ptr(a)
        self._seen[id(a)] = (weakref.ref(a), p)
        return p


class TrieWalker:
    """One trie laid out in pre-order for trie_walk.c. Stateless between calls: one walker serves every index (and
    thread; ctypes drops the GIL for the walk) of its vocabulary.

    Attributes (N = trie nodes + 1; node 0 is the root, a node's subtree is [i, subtree_end[i])):
        byte: (N,) uint8, each node's last byte. depth: (N,) uint16, its depth (the root's is 0).
        subtree_end: (N,) int32. end_lo: (N + 1,) int32, node i's ending tokens are end_ids[end_lo[i]:end_lo[i + 1]].
        end_ids: (M,) int32.
    """

    def __init__(self, lib: ctypes.CDLL, trie: TokenTrie):
        self._lib = lib
        sizes = [b.size for b in trie.byte]
        n = 1 + sum(sizes)
        self.num_nodes = n
        self.byte = np.zeros(n, dtype=np.uint8)
        self.depth = np.zeros(n, dtype=np.uint16)
        self.subtree_end = np.zeros(n, dtype=np.int32)
        parent = np.zeros(n, dtype=np.int64)
        ends: list[np.ndarray] = []
        end_count = np.zeros(n, dtype=np.int64)
        child_start = [cs.tolist() for cs in trie.child_start]
        end_start = [es.tolist() for es in trie.end_start]
        # NOTE: an explicit stack, not recursion: the deepest token is tens of bytes, but a pathological vocabulary
        # must not hit Python's recursion limit. Entries: (level, node) to enter, or (-1, pre-order id) to close.
        # Entries to enter also carry the pre-order id of their parent.
        stack: list[tuple[int, int, int]] = [(0, k, 0) for k in range(sizes[0] - 1, -1, -1)] if sizes else []
        pos = 1
        while stack:
            d, k, up = stack.pop()
            if d < 0:
                self.subtree_end[k] = pos
                continue
            i = pos
            pos += 1
            parent[i] = up
            self.byte[i], self.depth[i] = trie.byte[d][k], d + 1
            lo, hi = end_start[d][k], end_start[d][k + 1]
            if hi > lo:
                ends.append(trie.end_ids[d][lo:hi])
                end_count[i] = hi - lo
            stack.append((-1, i, 0))
            if d + 1 < len(sizes):
                stack.extend((d + 1, c, i) for c in range(child_start[d][k + 1] - 1, child_start[d][k] - 1, -1))
        self.subtree_end[0] = n
        self.end_lo = np.zeros(n + 1, dtype=np.int32)
        self.end_lo[1:] = np.cumsum(end_count)
        self.end_ids = np.concatenate(ends).astype(np.int32) if ends else np.zeros(0, dtype=np.int32)
        self._depth_state = np.zeros(int(self.depth.max(initial=0)) + 1, dtype=np.int32)
        # below[i]: the bytes of every node strictly under node i, as 4 x 64 bits (for the self-loop fast path),
        # gathered from the deepest level up.
        self.below = np.zeros((n, 4), dtype=np.uint64)
        own = np.zeros((n, 4), dtype=np.uint64)
        own[np.arange(n), self.byte >> 6] = np.left_shift(np.uint64(1), (self.byte & 63).astype(np.uint64))
        for d in range(int(self.depth.max(initial=0)), 0, -1):
            at = np.flatnonzero(self.depth == d)
            np.bitwise_or.at(self.below, parent[at], own[at] | self.below[at])
        self._loop_masks: dict[tuple, np.ndarray] = {}
        self._fixed = (_ptr(self.byte), _ptr(self.depth), _ptr(self.subtree_end), _ptr(self.end_lo), _ptr(self.end_ids))
        self._below_ptr = _ptr(self.below)
        self._local = threading.local()

    def walk(self, state: int, tables: Callable[[], tuple[np.ndarray, np.ndarray]],
             materialize: Callable[[np.ndarray], None], *, mask: np.ndarray | None = None,
             successors: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Walk every token from `state`. Sets the bits of the allowed tokens in `mask` ((words,) int32, updated in
        place) and, with `successors`, returns ((n,) int32 token ids, (n,) int32 states they lead to).

        `tables()` gives the index's current (table (rows, 256) int32, materialized (rows,) bool), re-read after each
        `materialize(states)` (which may grow them); `state` itself must be materialized. Thread-safe: each thread
        walks with its own scratch buffers."""
        loop = None
        if mask is not None and not successors:
            table, _ = tables()
            loop = self._loop_bits(table[state] == state)
            if loop is not None:
                mask |= self._loop_mask(loop, mask.size)
        scratch = self._scratch()
        try:
            scratch.busy = True
            return self._walk_rounds(state, tables, materialize, scratch, mask, successors, loop)
        finally:
            scratch.busy = False

    def _walk_rounds(self, state, tables, materialize, scratch, mask, successors, loop):
        n = self.num_nodes
        cap = self.end_ids.size if successors else 0
        (work_node, work_state), (pend_node, pend_state) = scratch.pairs
        work_node[0], work_state[0], n_work = 0, state, 1
        succ_ids, succ_states = (np.empty(cap, np.int32), np.empty(cap, np.int32)) if successors else (None, None)
        n_succ = ctypes.c_long(0)
        out = (_ptr(mask) if mask is not None else None, _ptr(succ_ids) if successors else None,
               _ptr(succ_states) if successors else None, ctypes.byref(n_succ) if successors else None, cap)
        rest = (scratch.depth_state_ptr, scratch.depth_pure_ptr, _ptr(loop) if loop is not None else None,
                self._below_ptr)
        work, pend = scratch.pair_ptrs
        while True:
            table, materialized = tables()
            got = self._lib.trie_walk(scratch.ptr(table), scratch.ptr(materialized), *self._fixed, *work, n_work,
                                      *out, *pend, n, *rest)
            if got < 0:
                raise RuntimeError("trie_walk: an output buffer was too small (a bug: they are sized to the trie)")
            if got == 0:
                break
            # the pending items are the next round's work: swap the two buffer pairs rather than copy
            (work_node, work_state), (pend_node, pend_state) = (pend_node, pend_state), (work_node, work_state)
            work, pend, n_work = pend, work, got
            states = work_state[:got]
            materialize(np.unique(states) if got > 64 else np.asarray(sorted(set(states.tolist())), np.int64))
        if successors:
            return succ_ids[: n_succ.value].copy(), succ_states[: n_succ.value].copy()
        return None

    def _scratch(self):
        """This thread's buffers for walk() (allocated once per thread: a mask build must not pay for them); fresh
        ones where a walk on this thread is already using them (a walk inside a materialize callback)."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None or scratch.busy:
            n = self.num_nodes
            fresh = _Scratch(
                pairs=((np.empty(n, np.int32), np.empty(n, np.int32)), (np.empty(n, np.int32), np.empty(n, np.int32))),
                depth_state=np.empty(self._depth_state.size, np.int32),
                depth_pure=np.zeros(self._depth_state.size, np.uint8))
            if scratch is None:
                self._local.scratch = fresh
            return fresh
        return scratch

    # A state that loops on fewer bytes than this is walked in full: the fast path would skip little.
    MIN_LOOP_BYTES = 16

    def _loop_bits(self, loops: np.ndarray) -> np.ndarray | None:
        """(4,) uint64 bit set of the bytes in (256,) bool `loops`, or None when there are too few to pay."""
        if int(loops.sum()) < self.MIN_LOOP_BYTES:
            return None
        return np.packbits(loops, bitorder="little").view("<u8").astype(np.uint64)

    def _loop_mask(self, loop: np.ndarray, words: int) -> np.ndarray:
        """The tokens made only of the bytes in `loop` ((words,) int32), computed once per byte set: a walk of the
        one-state automaton that loops on exactly those bytes."""
        key = (loop.tobytes(), words)
        hit = self._loop_masks.get(key)
        if hit is None:
            bits = np.unpackbits(loop.view(np.uint8), bitorder="little").astype(bool)  # (256,)
            table = np.where(bits, 0, -1).astype(np.int32)[None, :]  # (1, 256)
            hit = np.zeros(words, dtype=np.int32)
            self.walk(0, lambda: (table, np.ones(1, dtype=bool)), lambda _: None, mask=hit, successors=True)
            # NOTE: successors=True keeps that walk off the fast path it is computing; its pairs are dropped.
            hit.flags.writeable = False
            if len(self._loop_masks) >= 64:
                self._loop_masks.pop(next(iter(self._loop_masks)))
            self._loop_masks[key] = hit
        return hit


_walkers: dict[int, tuple[TokenTrie, TrieWalker]] = {}


def walker_for(trie: TokenTrie) -> TrieWalker | None:
    """The walker of `trie` (laid out once per trie), or None where the native library is unavailable."""
    lib = library()
    if lib is None:
        return None
    with _lock:
        hit = _walkers.get(id(trie))
        if hit is not None and hit[0] is trie:
            return hit[1]
    walker = TrieWalker(lib, trie)
    with _lock:
        _walkers[id(trie)] = (trie, walker)  # holding the trie keeps its id from being reused while cached
        while len(_walkers) > 8:
            _walkers.pop(next(iter(_walkers)))
    return walker


if __name__ == "__main__":  # `python -m structgen.fsm.native`: build now and say what mask builds will use
    if library() is not None:
        print("[setup] native mask walker: built")
    else:
        print(f"[setup] native mask walker unavailable ({unavailable_reason()}); masks are built with numpy")
