"""IncrementalDetokenizer: token ids in, text deltas out, never splitting a UTF-8 character, with stop strings.

Byte-level BPE tokens can end inside a multi-byte character; decoding such a prefix yields U+FFFD. We decode a
short window of recent tokens and emit only text that is stable (no trailing U+FFFD). Text that could still be
the start of a stop string is held back until it is known not to be one.
"""

from __future__ import annotations

from typing import Callable, Sequence

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, stop: Sequence[str] = (), accept: Callable[[str], bool] | None = None):
        """`accept(text_before_match) -> bool` (optional): whether a stop-string match may end the text; a refused
        match is skipped and the search goes on after it (the engine's rule for constrained requests)."""
        self.tokenizer = tokenizer     # public: logprobs name their tokens with it (output_builder)
        self._ids: list[int] = []
        self._prefix_offset = 0         # window start: decoding from here gives context for the next token
        self._read_offset = 0           # tokens up to here are already in self.text
        self.text = ""                  # all stable text so far (stop strings cut off)
        self._emitted = 0               # len of self.text already handed out
        self._stop = tuple(stop)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.stopped = False            # a stop string matched; text ends before it
        self.stop_string: str | None = None  # the one that matched (the earliest; at a tie, the first in `stop`)
        self._accept = accept
        self._search_from = 0           # matches starting before this were refused by `accept`

    def add(self, token_ids: Sequence[int]) -> None:
        """Append tokens (already filtered of EOS). No effect after a stop string matched."""
        if self.stopped:
            return
        self._ids.extend(token_ids)
        prefix = self.tokenizer.decode(self._ids[self._prefix_offset:self._read_offset])
        full = self.tokenizer.decode(self._ids[self._prefix_offset:])
        if full.endswith(_REPLACEMENT) or len(full) <= len(prefix):
            return                      # an incomplete character: wait for more bytes
        new = full[len(prefix):]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        if self._stop:
            # Only the new text and the tail that might straddle it can contain a fresh match.
            start = max(0, len(self.text) - self._hold, self._search_from)
            self.text += new
            while True:
                hits = [(i, s) for s in self._stop if (i := self.text.find(s, start)) >= 0]
                if not hits:
                    break
                first, matched = min(hits, key=lambda h: h[0])   # min keeps the first of equal positions
                if self._accept is None or self._accept(self.text[:first]):
                    self.text = self.text[:first]
                    self.stopped = True
                    self.stop_string = matched
                    break
                start = self._search_from = first + 1
        else:
            self.text += new

    def delta(self, final: bool = False) -> str:
        """Text not handed out yet. Holds back a tail that may begin a stop string unless `final`."""
        end = len(self.text)
        if self._stop and not final and not self.stopped:
            end = max(self._emitted, end - self._held_tail())
        out = self.text[self._emitted:end]
        self._emitted = end
        return out

    def _held_tail(self) -> int:
        """Length of the longest suffix of text that is a proper prefix of some stop string."""
        best = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best
