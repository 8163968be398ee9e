"""Prompt lookup: the tokens that followed the latest earlier occurrence of the last n tokens (extraction copies
spans of its input). `PromptLookup` is the n-gram index of one request; `LookupProposer` is the Proposer that keeps
one per request and cuts each proposal where the constraint rejects it.
"""

from __future__ import annotations

import weakref
from typing import Mapping, Sequence

from ...fsm import Vocabulary
from ..sequence import Sequence as Seq
from .proposer import DraftRequest


class PromptLookup:
    """N-gram index over one request's tokens (prompt, then output as it is committed).

    `propose(k)` matches the last n tokens (n from max_ngram down to min_ngram) against every earlier position
    and returns up to k tokens that followed the latest match; failing that, the last token's alias (its
    leading-space twin) as a 1-gram. Indexing is incremental: `extend` costs O(new
    tokens x ngram sizes), `propose` is a few dict lookups.
    """

    def __init__(self, context: Sequence[int], *, min_ngram: int = 1, max_ngram: int = 3,
                 aliases: Mapping[int, int] | None = None):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.min_ngram = min_ngram
        self.max_ngram = max_ngram
        # Last-token fallback (see `space_aliases`): a value copied into JSON starts without the space it had in
        # the text (`"New` after `":"`, ` New` in the document), so its token id never matches the document's.
        self.aliases = aliases if min_ngram == 1 else None
        self.tokens: list[int] = []
        # n -> {ngram: end}, where tokens[end - n:end] == ngram and end < len(tokens) (something followed it).
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(min_ngram, max_ngram + 1)}
        self.extend(context)

    def __len__(self) -> int:
        return len(self.tokens)

    def extend(self, new_tokens: Sequence[int]) -> None:
        """Append committed tokens (never drafts that may be rejected)."""
        toks = self.tokens
        old = len(toks)
        toks.extend(int(t) for t in new_tokens)
        # Ends old..len-1 now have a follower; the trailing ngram (end == len) is what we will look up.
        for end in range(max(old, 1), len(toks)):
            for n, index in self._index.items():
                if end >= n:
                    index[tuple(toks[end - n:end])] = end

    def propose(self, k: int, suffix: Sequence[int] = ()) -> list[int]:
        """Up to `k` tokens expected after `tokens + suffix` (suffix: uncommitted tokens, e.g. a forced run)."""
        if k <= 0:
            return []
        tail = self.tokens[-self.max_ngram:] + [int(t) for t in suffix]
        for n in range(min(self.max_ngram, len(tail)), self.min_ngram - 1, -1):
            end = self._index[n].get(tuple(tail[-n:]))
            if end is not None:
                return self.tokens[end:end + k]
        if self.aliases and tail:
            alias = self.aliases.get(tail[-1])
            end = None if alias is None else self._index[1].get((alias,))
            if end is not None:
                return self.tokens[end:end + k]
        return []


def space_aliases(token_bytes: Sequence[bytes]) -> dict[int, int]:
    """token id -> id of the same text with one leading space, for every token that has such a twin."""
    by_bytes = {b: i for i, b in enumerate(token_bytes) if b}
    out = {}
    for i, b in enumerate(token_bytes):
        if b and not b.startswith(b" "):
            twin = by_bytes.get(b" " + b)
            if twin is not None:
                out[i] = twin
    return out


class _LookupState:
    __slots__ = ("lookup", "synced")

    def __init__(self, lookup: PromptLookup):
        self.lookup = lookup
        self.synced = 0                 # tokens of seq.token_ids already in the index


class LookupProposer:
    """Prompt lookup as a Proposer: one PromptLookup per request (a weak map; `release` drops it early), fed
    with committed tokens only, queried with the forced run as the uncommitted suffix."""

    def __init__(self, tokenizer, eos_token_ids):
        self._tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        self._aliases: dict[int, int] | None = None   # built on the first request that looks up
        self._states: "weakref.WeakKeyDictionary[Seq, _LookupState]" = weakref.WeakKeyDictionary()

    def _state(self, seq: Seq) -> _LookupState:
        st = self._states.get(seq)
        if st is None:
            if self._aliases is None:
                self._aliases = space_aliases(Vocabulary.from_tokenizer(self._tokenizer).token_bytes)
            st = self._states[seq] = _LookupState(PromptLookup([], aliases=self._aliases))
        return st

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        out = []
        for r in requests:
            seq, st = r.seq, self._state(r.seq)
            if st.synced < seq.num_tokens:
                st.lookup.extend(seq.token_ids[st.synced:])
                st.synced = seq.num_tokens
            proposal = st.lookup.propose(r.k, suffix=r.prefix)
            if proposal:
                proposal = proposal[:self._admitted(seq.cursor, r.prefix, proposal)]
            out.append(proposal)
        return out

    def _admitted(self, cursor, prefix: list[int], proposal: list[int]) -> int:
        """Leading tokens of `proposal` the constraint admits after `prefix` (stopping after an EOS)."""
        if cursor is None:
            for i, tok in enumerate(proposal):
                if tok in self.eos_token_ids:
                    return i + 1
            return len(proposal)
        n = cursor.admitted([*prefix, *proposal])
        if n < len(prefix):
            raise RuntimeError("a forced run the constraint rejects")  # the planner's invariant broke
        return n - len(prefix)

    def release(self, seq: Seq) -> None:
        self._states.pop(seq, None)
