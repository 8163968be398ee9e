"""The per-request cursor: where one sequence stands in a shared CompiledConstraint.

A cursor is small (a state number and a history stack) and cheap to create. It is used by one request at a
time (not thread-safe itself); the CompiledConstraint behind it is shared and thread-safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from . import bitmask
from .index import DEAD, TokenIndex

if TYPE_CHECKING:
    from .budget import TokenBounds

# The state after EOS was accepted: nothing more is allowed.
ENDED = -2


class CursorSource(Protocol):
    """What a cursor reads of its constraint (structgen.fsm.api.CompiledConstraint is one); cursor.py needs
    nothing else of the compile API."""

    key: str

    @property
    def index(self) -> TokenIndex: ...

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    @property
    def empty_mask(self) -> np.ndarray: ...

    def forced_tokens(self, state: int) -> list[int]: ...

    @property
    def bounds(self) -> TokenBounds: ...


class Cursor:
    """Advance / mask / forced run / rollback over a CompiledConstraint.

    Masks and transitions are built on first visit of a state (then shared by every cursor of the constraint);
    that first visit may raise ConstraintTooComplexError if it runs past the configured limits.
    """

    __slots__ = ("_compiled", "_index", "_eos", "_state", "_history")

    def __new__(cls, compiled: CursorSource):
        # NOTE: a constraint with run-time checks (uniqueItems) gets the cursor that makes them
        # (structgen/fsm/unique_cursor.py); every other one this class, whose hot paths know nothing of them.
        if cls is Cursor and getattr(compiled.index, "has_guards", False):
            from .unique_cursor import UniqueCursor

            cls = UniqueCursor
        return object.__new__(cls)

    def __init__(self, compiled: CursorSource):
        self._compiled = compiled
        self._index = compiled.index
        self._eos = compiled.eos_token_ids
        self._state = self._index.initial
        self._history: list[int] = []

    @property
    def state(self) -> int:
        """The current state number (ENDED after EOS). Opaque; equal numbers mean equal futures."""
        return self._state

    @property
    def num_advanced(self) -> int:
        """Tokens accepted so far (what rollback can undo)."""
        return len(self._history)

    @property
    def num_words(self) -> int:
        """int32 words of one bitmask row of this constraint (ceil(vocab_size / 32))."""
        return self._index.vocab.num_words

    def copy(self) -> "Cursor":
        """An independent cursor at the same state with the same history."""
        other = object.__new__(Cursor)
        other._compiled, other._index, other._eos = self._compiled, self._index, self._eos
        other._state, other._history = self._state, list(self._history)
        return other

    def mask(self) -> np.ndarray:
        """The current (num_words,) int32 bitmask row (read-only; all zero after EOS)."""
        if self._state == ENDED:
            return self._compiled.empty_mask
        return self._index.mask(self._state)

    def fill_bitmask(self, row) -> None:
        """Write the current state's mask into `row`: a (num_words,) int32 numpy array or torch tensor row.

        Once the state's mask exists this is one row copy. After EOS the row is all zero.
        """
        bitmask.copy_row(row, self.mask())

    def allowed_token_ids(self) -> np.ndarray:
        """Sorted int64 ids allowed now (EOS included exactly in final states)."""
        return bitmask.unpack(self.mask())

    def is_allowed(self, token_id: int) -> bool:
        """Whether `advance(token_id)` would succeed (nothing changes)."""
        if self._state == ENDED:
            return False
        if token_id in self._eos:
            return self._index.is_final(self._state)
        return self._index.next_state(self._state, int(token_id)) != DEAD

    def advance(self, token_id: int) -> bool:
        """Accept `token_id`: True and move on, or False (state unchanged) if it is not allowed."""
        s = self._state
        if s == ENDED:
            return False
        token_id = int(token_id)
        if token_id in self._eos:
            if not self._index.is_final(s):
                return False
            nxt = ENDED
        else:
            nxt = self._index.next_state(s, token_id)
            if nxt == DEAD:
                return False
        self._history.append(s)
        self._state = nxt
        return True

    def is_final(self) -> bool:
        """The text so far is a complete match (EOS allowed); True after EOS."""
        return self._state == ENDED or self._index.is_final(self._state)

    def is_terminated(self) -> bool:
        """Final and nothing but EOS can follow (or EOS was accepted)."""
        return self._state == ENDED or self._index.is_terminated(self._state)

    def forced_tokens(self) -> list[int]:
        """The tokens that are the only legal continuation from here (possibly empty); the cursor stays put.

        Each returned token is allowed in sequence. When the forced bytes run into a choice point, the last
        token is held back because it could merge with what follows.
        """
        if self._state == ENDED:
            return []
        return self._compiled.forced_tokens(self._state)

    def forced_bytes(self) -> bytes:
        """The whole text that is the only legal continuation from here, as bytes (nothing held back; it may end
        inside a UTF-8 character). Empty after EOS or at a choice point. The cursor stays put."""
        if self._state == ENDED:
            return b""
        return bytes(self._index.forced_run(self._state)[0])

    def fill_along(self, tokens, rows=None, *, start: int = 0) -> int:
        """Walk `tokens` from here and return how many the constraint admits; the cursor ends where it started
        (also when a state's mask or transitions raise, e.g. ConstraintTooComplexError).

        The walk stops at the first token the constraint rejects; after EOS every token is rejected. With `rows`
        (an indexable of (num_words,) int32 numpy rows or torch tensor rows), the mask at position i along
        `tokens` -- the state after tokens[:i] -- goes to rows[i - start] for start <= i <= admitted: one row per
        admitted token plus the row after them. Rows past that are left alone.

        NOTE: uses only advance / fill_bitmask / rollback, so a test double of the cursor may borrow it.
        """
        n = 0
        try:
            for tok in tokens:
                if rows is not None and n >= start:
                    self.fill_bitmask(rows[n - start])
                if not self.advance(tok):
                    return n                # row n (the rejected position) is filled: the row after the admitted
                n += 1
            if rows is not None and n >= start:
                self.fill_bitmask(rows[n - start])
            return n
        finally:
            if n:
                self.rollback(n)

    def admitted(self, tokens) -> int:
        """How many leading tokens of `tokens` the constraint admits from here (stopping after EOS); no change."""
        return self.fill_along(tokens)

    # ---- the budget: tokens still needed to finish (structgen/fsm/budget.py) ------------------------------

    def min_tokens_to_finish(self) -> int:
        """A safe and consistent bound on the tokens needed from here to a final state (0 when final or after
        EOS): that many always suffice, and from a non-final state with bound b some allowed token leads to a
        state with bound <= b - 1. Where the tokenizer cannot spell any way out of the state (only vocabularies
        that lack some single-byte tokens), structgen.fsm.budget.UNREACHABLE (2**31 - 1). Cached per state (the first visit of a state may take a few ms, and may
        raise ConstraintTooComplexError past the compile limits). EOS is not counted."""
        s = self._state
        if s == ENDED:
            return 0
        return self._compiled.bounds.bound(s)

    def token_fits(self, token_id: int, budget: int) -> bool:
        """Whether `token_id` may be emitted with `budget` tokens left (this one included): budget >= 1, the
        token is allowed, and 1 + the bound after it <= budget (EOS: iff the state is final). No change."""
        if budget < 1 or self._state == ENDED:
            return False
        token_id = int(token_id)
        if token_id in self._eos:
            return self._index.is_final(self._state)
        nxt = self._index.next_state(self._state, token_id)
        if nxt == DEAD:
            return False
        return 1 + self._compiled.bounds.bound(nxt) <= budget

    def fill_bitmask_within(self, row, budget: int) -> bool:
        """Write into `row` ((num_words,) int32 numpy array or torch tensor row) the current mask restricted to
        the tokens that fit `budget` (as token_fits); True iff that removed any allowed token. No change.

        Non-empty whenever min_tokens_to_finish() <= budget and budget >= 1. The first call in a state walks
        every allowed token (tens of ms on a 49k vocabulary in a string); after that, one comparison + pack."""
        full = self.mask()
        if self._state == ENDED:
            bitmask.copy_row(row, full)
            return False
        within = self._compiled.bounds.mask_within(self._state, int(budget))
        bitmask.copy_row(row, within)
        return not np.array_equal(within, full)

    def rollback(self, n: int) -> None:
        """Undo the last `n` advances (n may be 0). ValueError if fewer than `n` were made."""
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"rollback needs a count >= 0, got {n!r}")
        if n > len(self._history):
            raise ValueError(f"cannot roll back {n} tokens: only {len(self._history)} were accepted")
        if n:
            self._state = self._history[-n]
            del self._history[-n:]

    def __repr__(self) -> str:
        return f"Cursor(state={self._state}, advanced={len(self._history)}, key={self._compiled.key[:12]})"
