"""The cursor of a constraint with run-time checks: JSON Schema's `uniqueItems`, exact.

The automaton marks the states reached by a byte that completed an item of a unique array (`TokenIndex.guarded`);
its tables assume the item is new. This cursor keeps a structural track of the text it emitted (item_tracker.py) and
applies one rule, byte by byte along a token:

    after a byte that enters a guarded state, if the item it completed equals an earlier item of its array (the
    innermost open one), the walk goes on from that state less its guarded configurations (`TokenIndex.stripped`),
    or dies where nothing is left;

and a token is allowed iff its walk survives and ends in a state from which some text still reaches a final state
under that rule ("viable": at once where the automaton says the state is `safe` whatever the earlier items are, else
by a bounded search). So an item that would repeat an earlier one can never be closed, and no allowed token leads
into a dead end (an enum item whose every value is taken, a string that could only close as a repeat).

Cost: only the `TokenIndex.risky_tokens` of a state (those whose bytes complete an item, or end where the state is not
safe) are walked per position; every other allowed token is taken from the state's mask as is. Constraints without
uniqueItems never get this class (Cursor.__new__).

NOTE: `state` numbers no longer tell the whole future here (the emitted items matter too).
"""

from __future__ import annotations

import numpy as np

from . import bitmask
from .cursor import ENDED, Cursor
from .index import DEAD
from .item_tracker import EMPTY, IN_STRING, ItemKeys, feed

# Most bytes one viability search may try (then the token is refused: never a dead end, at worst a valid text not
# offered; the search runs only from states that are not `safe`, e.g. inside an enum item).
MAX_SEARCH_BYTES = 4096


class UniqueCursor(Cursor):
    """A Cursor that also enforces uniqueItems (see the module docstring). Same interface and contracts."""

    __slots__ = ("_text", "_track", "_tracks", "_keys", "_steps")

    def __init__(self, compiled):
        super().__init__(compiled)
        self._text = bytearray()  # every byte accepted so far
        self._track = EMPTY  # the structural track after them
        self._tracks: list = []  # per accepted token: (track before it, len(_text) before it)
        self._keys = ItemKeys()
        # per position along the history (valid while the tokens before it stay): ({token: (next state, track after
        # or None)}, [the exact mask or None], {bytes: whether the item they complete repeats}); kept across a rollback
        # to it, as fill_along walks and comes back
        self._steps: list = []

    def copy(self) -> "UniqueCursor":
        other = object.__new__(UniqueCursor)
        other._compiled, other._index, other._eos = self._compiled, self._index, self._eos
        other._state, other._history = self._state, list(self._history)
        other._text, other._keys, other._steps = bytearray(self._text), self._keys, []
        # NOTE: tracks are rebuilt, not shared: their item-key sets move between nodes as they are asked for
        # (item_tracker.Items), which two cursors in two threads must not do to the same nodes.
        ends = [n for _, n in self._tracks[1:]] + [len(self._text)]
        track, tracks = EMPTY, []
        for (_, start), end in zip(self._tracks, ends):
            tracks.append((track, start))
            track = feed(track, other._text, start, end)
        other._tracks, other._track = tracks, track
        return other

    # ---- the rule ------------------------------------------------------------------------------------------------

    def _memo(self) -> tuple:
        depth = len(self._history)
        steps = self._steps
        if len(steps) <= depth:
            steps.extend([None] * (depth + 1 - len(steps)))
        step = steps[depth]
        if step is None:
            step = steps[depth] = ({}, [None], {})
        return step

    def _outcome(self, token_id: int):
        """(state after `token_id` under the rule, or DEAD; the track after it, or None where not yet fed)."""
        s = self._state
        nxt = self._index.next_state(s, token_id)
        if nxt == DEAD:
            return DEAD, None
        outcomes = self._memo()[0]
        hit = outcomes.get(token_id)
        if hit is None:
            if token_id in self._index.risky_tokens(s):
                hit = self._checked(s, token_id, nxt)
            else:
                hit = (nxt, None)
            outcomes[token_id] = hit
        return hit

    def _checked(self, state: int, token_id: int, nxt: int):
        """_outcome of a risky token. While every item it completes is new, its walk is the tables' (to `nxt`): only
        the tracker is fed, up to each completing byte (the first check memoized per position by the bytes before it:
        most risky tokens share it, e.g. every token that starts with the quote closing a string item); a repeat
        sends it to the byte-by-byte walk."""
        index = self._index
        data = index.vocab.token_bytes[token_id]
        arrivals = index.arrivals(state, token_id)
        if arrivals and self._repeats_after(data[:arrivals[0] + 1]):
            return self._walk(state, data)
        if len(arrivals) <= 1 and index.safe(nxt):
            return nxt, None  # the track is fed when the token is taken
        text, keys = self._text, self._keys
        start = len(text)
        text += data
        try:
            track, done = self._track, 0
            for i in arrivals:
                track = feed(track, text, start + done, start + i + 1)
                done = i + 1
                if i != arrivals[0] and keys.repeats(track, text, start + done):
                    break
            else:
                track = feed(track, text, start + done, len(text))
                if not index.safe(nxt) and not self._viable(nxt, track):
                    return DEAD, None
                return nxt, track
        finally:
            del text[start:]
        return self._walk(state, data)

    def _repeats_after(self, prefix: bytes) -> bool:
        """Whether the item that `prefix` (read from here) completes with its last byte repeats an earlier one."""
        memo = self._memo()[2]
        hit = memo.get(prefix)
        if hit is None and prefix[-1] == 0x22 and self._track.mode == IN_STRING:
            hit = memo[prefix] = self._string_repeats(prefix)
        if hit is None:
            text = self._text
            start = len(text)
            text += prefix
            try:
                hit = memo[prefix] = self._keys.repeats(feed(self._track, text, start, len(text)), text, len(text))
            finally:
                del text[start:]
        return hit

    def _string_repeats(self, prefix: bytes):
        """_repeats_after where `prefix` closes a string item without escapes (most checks while a list of strings is
        written): its key without parsing JSON. None where that does not apply."""
        top = self._track.top
        if top is None or not top.array or top.start < 0 or self._text[top.start] != 0x22:
            return None
        if prefix.count(0x22) != 1 or 0x5C in prefix or 0x5C in self._text[top.start:]:
            return None
        value = (bytes(self._text[top.start + 1:]) + prefix[:-1]).decode("utf-8")
        return ("s", value) in self._keys.keys_of(top.items)

    def _walk(self, state: int, data: bytes):
        index, text, keys = self._index, self._text, self._keys
        start = len(text)
        text += data
        try:
            x, track = state, self._track
            for i, b in enumerate(data):
                y = int(index.byte_row(x)[b])
                if y == DEAD:
                    return DEAD, None
                track = feed(track, text, start + i, start + i + 1)
                if index.guarded(y) and keys.repeats(track, text, start + i + 1):
                    y = index.stripped(y)
                    if y == DEAD:
                        return DEAD, None
                x = y
            if not index.safe(x) and not self._viable(x, track):
                return DEAD, None
            return x, track
        finally:
            del text[start:]

    def _viable(self, state: int, track) -> bool:
        """Whether some text leads from `state` (after self._text) to a final or safe state under the rule: a
        depth-first search, nearest bytes first, of at most MAX_SEARCH_BYTES bytes (past that: no)."""
        index, text, keys, bounds = self._index, self._text, self._keys, self._compiled.bounds
        base = len(text)

        def options(s: int) -> list:
            row = index.byte_row(s)
            live = np.flatnonzero(row >= 0).tolist()
            nxt = row[live].tolist()
            return sorted(zip((bounds.byte_distance(t) for t in nxt), live, nxt), reverse=True)

        frames = [(track, options(state))]  # frames[k]: the track and the untried (distance, byte, state) at depth k
        tried = 0
        try:
            while frames:
                track, todo = frames[-1]
                del text[base + len(frames) - 1:]
                if not todo:
                    frames.pop()
                    continue
                _, b, y = todo.pop()  # the nearest byte left (the list is sorted farthest first)
                tried += 1
                if tried > MAX_SEARCH_BYTES:
                    return False
                text.append(b)
                after = feed(track, text, len(text) - 1, len(text))
                if index.guarded(y) and keys.repeats(after, text, len(text)):
                    y = index.stripped(y)
                    if y == DEAD:
                        continue
                if index.is_final(y) or index.safe(y):
                    return True
                frames.append((after, options(y)))
            return False
        finally:
            del text[base:]

    # ---- the Cursor interface --------------------------------------------------------------------------------------

    def mask(self) -> np.ndarray:
        if self._state == ENDED:
            return self._compiled.empty_mask
        full = self._index.mask(self._state)
        risky = self._index.risky_tokens(self._state)
        if not risky:
            return full
        memo = self._memo()[1]
        if memo[0] is None:
            refused = [t for t in risky if self._outcome(t)[0] == DEAD]
            memo[0] = _without(full, refused) if refused else full
        return memo[0]

    def is_allowed(self, token_id: int) -> bool:
        if self._state == ENDED:
            return False
        if token_id in self._eos:
            return self._index.is_final(self._state)
        return self._outcome(int(token_id))[0] != DEAD

    def advance(self, token_id: int) -> bool:
        s = self._state
        if s == ENDED:
            return False
        token_id = int(token_id)
        start = len(self._text)
        if token_id in self._eos:
            if not self._index.is_final(s):
                return False
            nxt, track = ENDED, self._track
        else:
            nxt, track = self._outcome(token_id)
            if nxt == DEAD:
                return False
            self._text += self._index.vocab.token_bytes[token_id]
            if track is None:
                track = feed(self._track, self._text, start, len(self._text))
        self._tracks.append((self._track, start))
        self._history.append(s)
        del self._steps[len(self._history):]
        self._state, self._track = nxt, track
        return True

    def rollback(self, n: int) -> None:
        super().rollback(n)  # validates n first; changes nothing when it raises
        if n:
            self._track, start = self._tracks[-n]
            del self._tracks[-n:]
            del self._text[start:]
            del self._steps[len(self._history) + 1:]

    def forced_tokens(self) -> list[int]:
        """As Cursor.forced_tokens: the forced text's tokens, cut at the first one the rule refuses (the forced bytes
        are the only way on whatever the items are; a token after them may still be refused as a dead end)."""
        tokens = super().forced_tokens()
        n = 0
        try:
            for t in tokens:
                if not self.advance(t):
                    break
                n += 1
        finally:
            self.rollback(n)
        return tokens[:n]

    def token_fits(self, token_id: int, budget: int) -> bool:
        if budget < 1 or self._state == ENDED:
            return False
        token_id = int(token_id)
        if token_id in self._eos:
            return self._index.is_final(self._state)
        nxt = self._outcome(token_id)[0]
        return nxt != DEAD and 1 + self._compiled.bounds.bound(nxt) <= budget

    def fill_bitmask_within(self, row, budget: int) -> bool:
        full = self.mask()
        if self._state == ENDED:
            bitmask.copy_row(row, full)
            return False
        within = np.bitwise_and(self._compiled.bounds.mask_within(self._state, int(budget)), full)
        bounds = self._compiled.bounds
        fixes = []
        for t in self._index.risky_tokens(self._state):
            nxt = self._outcome(t)[0]  # NOTE: mask_within judged the state the tables give, not this one
            if nxt != DEAD:
                fixes.append((t, 1 + bounds.bound(nxt) <= budget))
        if fixes:
            words = within.view(np.uint32)
            for t, fits in fixes:
                if fits:
                    words[t >> 5] |= np.uint32(1 << (t & 31))
                else:
                    words[t >> 5] &= ~np.uint32(1 << (t & 31))
        bitmask.copy_row(row, within)
        return not np.array_equal(within, full)

    def __repr__(self) -> str:
        return f"UniqueCursor(state={self._state}, advanced={len(self._history)}, key={self._compiled.key[:12]})"


def _without(mask: np.ndarray, token_ids: list) -> np.ndarray:
    """A read-only copy of a (num_words,) int32 mask with `token_ids` cleared."""
    out = mask.copy()
    words = out.view(np.uint32)
    for t in token_ids:
        words[t >> 5] &= ~np.uint32(1 << (t & 31))
    out.flags.writeable = False
    return out
