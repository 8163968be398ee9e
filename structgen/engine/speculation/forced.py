"""Forced runs (jump-forward): the text a constraint forces, as the tokens the tokenizer itself would write.

When the cursor's state admits exactly one continuation for a while (`{"name":` after `{` in a schema with one
required key), no model step is needed to choose it. `ForcedRunPlanner.plan` turns that forced text into
*canonical* tokens: the tokenizer's own encoding of the text, in context (the last few generated tokens are
re-encoded with it so a merge across the seam is seen), and never ending at a boundary the tokenizer would not
produce once the free text after it is known.

Token-boundary rule. Let F be the forced bytes and N the bytes that may follow F (first bytes of the tokens the
constraint allows after F). If some vocabulary token starts with F[s:] and continues with a byte of N, then once the
model writes what follows, the tokenizer may write that token across the end of F, so no boundary after offset s is
safe. The run stops at the last canonical boundary at or before the smallest such s. Example with SmolLM2: the
forced text `"na` (keys `name` and `nationality` both possible) stops before `na`, because `name` and `nat...` would
cross its end; `"` alone goes ahead. When nothing can follow F (the constraint is terminated) the whole run is safe.

Where the text comes from: `Cursor.forced_bytes()` (the FSM's whole forced text). This module is the one place
that tokenizes it. First without context, walked along the constraint, holding back the last token unless nothing
but EOS can follow the whole text (the rule the engine has always applied); then the kept text again in context,
which gives the run's tokens.

NOTE: the engine feeds these tokens as a *draft* that the target model verifies in the same forward that computes
their KV (structgen/engine/speculation/verify.py), so a run the model would have tokenized differently costs one
verified position, never a changed output. The boundary rule is what keeps that rare.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ...fsm import Vocabulary, bitmask
from ...tokenizer import Tokenizer
from .proposer import DraftRequest


class ForcedRunCursor(Protocol):
    """The part of the FSM cursor (structgen/fsm/cursor.py, docs/INTERFACES.md) a forced run uses."""

    @property
    def num_words(self) -> int: ...
    def forced_bytes(self) -> bytes: ...
    def fill_along(self, tokens: Sequence[int], rows=None, *, start: int = 0) -> int: ...


@dataclass(frozen=True)
class ForcedRun:
    """One planned run. `token_ids` may be empty (nothing forced, or nothing safe to force yet)."""

    token_ids: tuple[int, ...]
    text: bytes          # the bytes of token_ids
    forced_bytes: int    # how many bytes the constraint forced (>= len(text): the rest is left to the model)

    @property
    def held_back(self) -> int:
        """Forced bytes not emitted because a longer token could cross their end."""
        return self.forced_bytes - len(self.text)


class VocabularyBytes:
    """Token id -> bytes (structgen/fsm/vocab.py), plus the prefix table the boundary rule needs.

    `next_bytes[p]` is a 256-bit mask (a Python int) of the bytes b such that `p + b` starts some token, for every
    proper prefix p of a token. Built once per tokenizer (~0.5 s for SmolLM2's 49k tokens) and shared.
    """

    def __init__(self, tokenizer: Tokenizer):
        vocab = Vocabulary.from_tokenizer(tokenizer)    # the FSM's token bytes (structgen.fsm's public Vocabulary)
        self.special = frozenset(tokenizer.special_token_ids) | frozenset(tokenizer.eos_token_ids)
        # NOTE: special and added tokens have no bytes (b""): the constraint never allows them.
        self.tokens: list[bytes] = list(vocab.token_bytes) + [b""] * (tokenizer.vocab_size - len(vocab.token_bytes))
        self.first_byte = np.array([t[0] if t else -1 for t in self.tokens], dtype=np.int16)  # (V,)
        next_bytes: dict[bytes, int] = {}
        for tok in self.tokens:
            for cut in range(1, len(tok)):
                prefix = tok[:cut]
                next_bytes[prefix] = next_bytes.get(prefix, 0) | (1 << tok[cut])
        self.next_bytes = next_bytes
        self.max_len = max(len(t) for t in self.tokens)

    def bytes_of(self, token_ids: Sequence[int]) -> bytes:
        return b"".join(self.tokens[t] for t in token_ids)


@functools.lru_cache(maxsize=4)
def vocabulary_bytes(tokenizer: Tokenizer) -> VocabularyBytes:
    return VocabularyBytes(tokenizer)


class ForcedRunPlanner:
    """Plans forced runs for one tokenizer; stateless per request, safe to share across requests.

    Args:
        tokenizer: the tokenizer the constraints were compiled against.
        max_tokens: cap on one run (a forward over a very long run delays the other sequences of the batch).
        context_tokens: generated tokens re-encoded with the forced text to see merges across the seam.
    """

    def __init__(self, tokenizer: Tokenizer, *, max_tokens: int = 32, context_tokens: int = 3):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if context_tokens < 0:
            raise ValueError(f"context_tokens must be >= 0, got {context_tokens}")
        self.tokenizer = tokenizer
        self.vocab = vocabulary_bytes(tokenizer)
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens

    def plan(self, cursor: ForcedRunCursor, generated: Sequence[int]) -> ForcedRun:
        """The safe canonical tokens of the text forced from the cursor's state. The cursor is left unchanged.

        `generated` are the tokens emitted so far for this request (output only, not the prompt).
        """
        forced_len, text, forced = self._forced_text(cursor)
        if not text:
            return ForcedRun((), b"", 0)
        tokens = self._canonical(text, generated)
        if tokens is None:
            tokens = forced  # the constraint's own tokens for the text
        # Walk the cursor through the run: this confirms the constraint admits every token and tells what may follow.
        after = np.zeros((1, cursor.num_words), dtype=bitmask.DTYPE)                 # (1, W) the mask after the run
        walked = cursor.fill_along(tokens, after, start=len(tokens))
        if walked < len(tokens):
            follow_mask = (1 << 256) - 1  # the run was cut by the constraint: treat anything as able to follow
        else:
            follow_mask = self._follow_mask(bitmask.unpack(after[0]))
        tokens = tokens[:walked]
        safe_end = self._safe_end(self.vocab.bytes_of(tokens), follow_mask)
        kept, end = [], 0
        for tok in tokens:
            end += len(self.vocab.tokens[tok])
            if end > safe_end or len(kept) >= self.max_tokens:
                break
            kept.append(tok)
        return ForcedRun(tuple(kept), self.vocab.bytes_of(kept), forced_len)

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        """The Proposer interface: each sequence's planned run (no prefix), at most `k` tokens."""
        return [list(self.plan(r.seq.cursor, r.seq.output_token_ids).token_ids[:r.k]) for r in requests]

    def release(self, seq) -> None:
        """Nothing is held per request."""

    def _forced_text(self, cursor: ForcedRunCursor) -> tuple[int, bytes, list[int]]:
        """(length of the forced text in bytes, the part of it safe to hand over, the tokenizer's own tokens for
        that part without context).

        The forced bytes, cut to whole characters, are encoded and walked along the constraint; the last token
        is held back because it could merge with what follows, unless the text is all there is (nothing but EOS
        can follow it).
        """
        data = bytes(cursor.forced_bytes())
        for cut in range(len(data), max(len(data) - 4, -1), -1):
            try:
                text = data[:cut].decode("utf-8")  # a run ends on a whole character: the tokenizer reads text
                break
            except UnicodeDecodeError:
                continue
        else:
            return 0, b"", []
        if not text:
            return 0, b"", []
        ids = list(self.tokenizer.encode(text))
        after = np.zeros((1, cursor.num_words), dtype=bitmask.DTYPE)                 # (1, W) the mask after ids
        n = cursor.fill_along(ids, after, start=len(ids))
        whole = cut == len(data) and n == len(ids)
        ids = ids[:n]
        # NOTE: nothing with bytes allowed after the whole text = terminated (only EOS), with a vocabulary that
        # spells every byte.
        if ids and not (whole and self._follow_mask(bitmask.unpack(after[0])) == 0):
            ids.pop()
        return cut, self.vocab.bytes_of(ids), ids

    def _canonical(self, text: bytes, generated: Sequence[int]) -> list[int] | None:
        """The tokenizer's tokens of `text` written after `generated`, or None if they cannot be had cleanly."""
        tail = list(generated[-self.context_tokens:]) if self.context_tokens else []
        for context in (tail, []):
            joined = self.vocab.bytes_of(context) + text
            try:
                decoded = joined.decode("utf-8")
            except UnicodeDecodeError:  # the seam splits a character: try without the context
                continue
            ids = self.tokenizer.encode(decoded)
            if ids[: len(context)] != context:
                continue  # the tokenizer would merge across the seam; the seam is already written, so drop it
            ids = ids[len(context):]
            if any(i in self.vocab.special for i in ids) or self.vocab.bytes_of(ids) != text:
                return None  # e.g. the text spells a special token: keep the constraint's own tokens
            return ids
        return None

    def _follow_mask(self, allowed: Sequence[int]) -> int:
        """256-bit mask of the first bytes of the tokens allowed after the run (EOS and specials excluded)."""
        allowed = np.asarray(allowed, dtype=np.int64)
        firsts = self.vocab.first_byte[allowed] if allowed.size else np.empty(0, dtype=np.int16)
        mask = 0
        for b in np.unique(firsts[firsts >= 0]).tolist():
            mask |= 1 << b
        return mask

    def _safe_end(self, text: bytes, follow_mask: int) -> int:
        """The largest offset of `text` that no vocabulary token can cross into what follows."""
        if not follow_mask:
            return len(text)
        start = max(0, len(text) - self.vocab.max_len + 1)
        for s in range(start, len(text)):
            if self.vocab.next_bytes.get(text[s:], 0) & follow_mask:
                return s
        return len(text)
