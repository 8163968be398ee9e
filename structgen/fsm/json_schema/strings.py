"""The JSON string leaf: quotes, escapes and raw UTF-8, with a char-level DFA (pattern / format) and
length bounds applied to the *decoded* characters.

Frame = (node, dfa_state, count, decoded, pending); the opening-quote frame is (node, None).
- count: decoded characters so far, capped where larger values behave alike (at max_length, else min_length).
- decoded: for strings that must differ from some names (extra object keys), the text so far while it is
  still a prefix of one of them, else None.
- pending: None at a character boundary, or the part of a character read so far: ("u8", bytes), or
  ("u8*", bytes still to come, next byte span) when every completion of it moves the DFA alike (then
  which exact bytes were read does not matter, and all such prefixes share one state),
  ("esc",), ("hex", digits), ("lo?", high), ("lou", high), ("lohex", high, digits).
"""

from __future__ import annotations

import math

from ..regex import LEAD_BYTES, CharDFA, utf8_prefix_range, utf8_sequence_length
from .lengths import walks_of
from .nodes import DONE_FRAME, NEVER, Node

_QUOTE, _BACKSLASH = 0x22, 0x5C
_SIMPLE_ESCAPES = {ord('"'): 0x22, ord("\\"): 0x5C, ord("/"): 0x2F, ord("b"): 0x08, ord("f"): 0x0C,
                   ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09}
_HEX = {b: int(chr(b), 16) for b in b"0123456789abcdefABCDEF"}
_HIGH = (0xD800, 0xDBFF)
_LOW = (0xDC00, 0xDFFF)


def _hex_span(digits: str) -> tuple[int, int]:
    rest = 4 - len(digits)
    base = int(digits, 16) << (4 * rest) if digits else 0
    return base, base | ((1 << (4 * rest)) - 1)


def _astral(high: int, low_lo: int, low_hi: int) -> tuple[int, int]:
    base = 0x10000 + ((high - 0xD800) << 10)
    return base + (low_lo - 0xDC00), base + (low_hi - 0xDC00)


def _least(costs) -> float | None:
    """The smallest cost, None if any is unknown (then the matcher searches), inf for none."""
    best = math.inf
    for c in costs:
        if c is None:
            return None
        best = min(best, c)
    return best


class JsonString(Node):
    """A JSON string whose decoded text the DFA accepts, with min_length <= len <= max_length (code points),
    and (if `exclude` is given) different from every name in `exclude`."""

    __slots__ = ("dfa", "min_length", "max_length", "exclude", "_exclude_prefixes", "_next_chars", "_cap", "_viable",
                 "_walks", "_one_char", "_templates",
                 "always_reads")

    def __init__(self, dfa: CharDFA, min_length: int, max_length: int | None, exclude=None):
        self.dfa = dfa
        self.min_length = min_length
        self.max_length = max_length
        self.exclude = frozenset(exclude) if exclude else None
        self._exclude_prefixes = (frozenset(n[:i] for n in self.exclude for i in range(len(n) + 1))
                                  if self.exclude else frozenset())
        # prefix of an excluded name -> the code points that extend it towards one (a scan of every prefix per byte
        # range cost ~30% of materializing a key state of an object with many declared names)
        self._next_chars: dict[str, tuple[int, ...]] = {}
        for n in self.exclude or ():
            for i in range(len(n)):
                self._next_chars[n[:i]] = (*self._next_chars.get(n[:i], ()), ord(n[i]))
        self._cap = max_length if max_length is not None else min_length
        self._viable: dict = {}
        self._one_char: dict = {}  # DFA state -> the DFA states one character away (sorted)
        self._templates: dict = {}  # see _boundary_moves
        self._walks = walks_of(dfa)
        # NOTE: every frame this leaf makes is viable, so it has a move (a character or the closing quote) -- except
        # where an excluded name could be spelled in full with nothing after it. The matcher then need not build the
        # moves of every successor frame only to learn that it reads (see SchemaAutomaton._local_closure).
        self.always_reads = self.exclude is None

    @classmethod
    def build(cls, dfa: CharDFA, min_length: int = 0, max_length: int | None = None, exclude=None) -> Node:
        node = cls(dfa, min_length, max_length, exclude)
        if dfa.is_empty or not node.viable(dfa.initial, 0):
            return NEVER
        return node

    # -------------------------------------------------------------------------------- viability
    def viable(self, s: int, count: int) -> bool:
        key = (s, count)
        hit = self._viable.get(key)
        if hit is None:
            hi = None if self.max_length is None else self.max_length - count
            hit = self._viable[key] = self._walks.exists(s, self.min_length - count, hi)
        return hit

    # ----------------------------------------------------------------------------- shortest way out
    def exit_bytes(self, frame, child_exit) -> float | None:
        """The fewest bytes until this frame pops (the closing quote read), in closed form; None where the matcher
        has to search: the opening quote (one byte to a frame between characters) and a text that may still become an
        excluded name. NOTE: without the closed form inside a character too, a search from `\\u` visits every
        4-hex-digit spelling (65,536 frames) before the answer, since each is closer than a long minimum length."""
        if frame[1] is None:
            return None
        _, s, count, decoded, pending = frame
        if pending is None:
            return None if decoded is not None else self._boundary_exit(s, count)
        return self._pending_exit(s, count, decoded, pending)

    def _boundary_exit(self, s: int, count: int) -> float:
        # NOTE: `count` is capped at min_length when there is no maximum, so min_length - count stays exact.
        lo = max(0, self.min_length - count)
        hi = None if self.max_length is None else self.max_length - count
        c = self._walks.cheapest(s, lo, hi)
        return math.inf if c is None else c + 1  # + the closing quote

    def _char_exit(self, s: int, count: int, decoded, k: int, lo: int, hi: int) -> float | None:
        """k more bytes end a character in [lo, hi]; the fewest bytes out from there (None: it may extend an excluded
        name, so the matcher searches)."""
        if lo > hi:
            return math.inf
        if self._continues_excluded(decoded, lo, hi):
            return None
        c = min(count + 1, self._cap) if self.max_length is None else count + 1
        best = min((self._boundary_exit(t, c) for t in self.dfa.next_states_in_range(s, lo, hi)), default=math.inf)
        return k + best

    def _hex_exit(self, s: int, count: int, decoded, digits: str) -> float | None:
        """After `\\u` and `digits`: a BMP character in 4 - len(digits) bytes, or a high surrogate and its `\\uDCxx`."""
        r = 4 - len(digits)
        lo, hi = _hex_span(digits)
        parts = []
        if lo < _HIGH[0]:
            parts.append((r, lo, min(hi, _HIGH[0] - 1)))
        if hi > _LOW[1]:
            parts.append((r, max(lo, _LOW[1] + 1), hi))
        if lo <= _HIGH[1] and hi >= _HIGH[0]:
            a, b = max(lo, _HIGH[0]), min(hi, _HIGH[1])
            parts.append((r + 6, _astral(a, 0xDC00, 0xDC00)[0], _astral(b, 0xDFFF, 0xDFFF)[1]))
        return _least(self._char_exit(s, count, decoded, k, x, y) for k, x, y in parts)

    def _pending_exit(self, s: int, count: int, decoded, pending) -> float | None:
        """exit_bytes inside a character: as `moves` reads it, kind by kind."""
        kind = pending[0]
        if kind == "u8*":
            t = self.dfa.step_symbol(s, self.dfa.else_symbol)
            c = min(count + 1, self._cap) if self.max_length is None else count + 1
            return math.inf if t is None else pending[1] + self._boundary_exit(t, c)
        if kind == "u8":
            p = pending[1]
            rng = utf8_prefix_range(p)
            if rng is None:
                return math.inf
            return self._char_exit(s, count, decoded, utf8_sequence_length(p[0]) - len(p), *rng)
        if kind == "esc":
            simple = (self._char_exit(s, count, decoded, 1, cp, cp) for cp in _SIMPLE_ESCAPES.values())
            hex_ = self._hex_exit(s, count, decoded, "")
            return _least([*simple, None if hex_ is None else 1 + hex_])
        if kind == "hex":
            return self._hex_exit(s, count, decoded, pending[1])
        high = pending[1]
        digits = pending[2] if kind == "lohex" else ""
        k = {"lo?": 6, "lou": 5}.get(kind, 4 - len(digits))
        lo, hi = _hex_span(digits)
        lo, hi = max(lo, _LOW[0]), min(hi, _LOW[1])
        if lo > hi:
            return math.inf
        return self._char_exit(s, count, decoded, k, *_astral(high, lo, hi))

    def _range_viable(self, s: int, count: int, lo: int, hi: int) -> bool:
        c = min(count + 1, self._cap) if self.max_length is None else count + 1
        return any(self.viable(t, c) for t in self.dfa.next_states_in_range(s, lo, hi))

    def _hex_viable(self, s: int, count: int, digits: str) -> bool:
        lo, hi = _hex_span(digits)
        parts = []
        if lo < _HIGH[0]:
            parts.append((lo, min(hi, _HIGH[0] - 1)))
        if hi > _LOW[1]:
            parts.append((max(lo, _LOW[1] + 1), hi))
        if lo <= _HIGH[1] and hi >= _HIGH[0]:
            a, b = max(lo, _HIGH[0]), min(hi, _HIGH[1])
            parts.append((_astral(a, 0xDC00, 0xDC00)[0], _astral(b, 0xDFFF, 0xDFFF)[1]))
        return any(self._range_viable(s, count, a, b) for a, b in parts)

    def _low_viable(self, s: int, count: int, high: int, digits: str) -> bool:
        lo, hi = _hex_span(digits)
        lo, hi = max(lo, _LOW[0]), min(hi, _LOW[1])
        return lo <= hi and self._range_viable(s, count, *_astral(high, lo, hi))

    def _continues_excluded(self, decoded, lo: int, hi: int) -> bool:
        """Could a character in [lo, hi] extend `decoded` towards an excluded name?"""
        if decoded is None:
            return False
        return any(lo <= c <= hi for c in self._next_chars.get(decoded, ()))

    def _advance(self, s: int, count: int, decoded, cp: int):
        """The frame after reading code point cp, or None if that leaves no valid completion."""
        t = self.dfa.step(s, cp)
        if t is None:
            return None
        c = count + 1
        if self.max_length is None:
            c = min(c, self._cap)
        if not self.viable(t, c):
            return None
        if decoded is not None:
            decoded = decoded + chr(cp)
            if decoded not in self._exclude_prefixes:
                decoded = None
        return (self, t, c, decoded, None)

    # ------------------------------------------------------------------------------ frame protocol
    def mask_key(self, frame, horizon: int):
        """With min_length met and more than `horizon` + the DFA's size characters left before max_length, the count
        no longer matters within `horizon` bytes: a token completes at most `horizon` characters (the one in progress
        included), and each DFA state it reaches still has its shortest way to a final state (under `num_states`
        characters) inside the bound. So such frames share a key (and one mask) whatever their count."""
        if (len(frame) == 5 and frame[3] is None and self.max_length is not None
                and frame[2] >= self.min_length and self.max_length - frame[2] > horizon + self.dfa.num_states):
            return (self, frame[1], "far", frame[4])
        return frame

    def entry(self):
        return (self, None)

    def _boundary_moves(self, s: int, count: int) -> dict:
        """moves() between characters (no excluded name in reach), from a template per (DFA state, min_length met,
        viability of each DFA state one character away): the moves of count c and c + 1 differ only in the count
        their frames carry while those agree, so a long counted string builds the byte map once, not per count.
        NOTE: the template is the slow path's own answer, taken apart; ~10x cheaper per new count."""
        c = min(count + 1, self._cap) if self.max_length is None else count + 1
        nexts = self._one_char.get(s)
        if nexts is None:
            nexts = self._one_char[s] = tuple(sorted(self.dfa.next_states_in_range(s, 0, 0x10FFFF)))
        key = (s, count >= self.min_length, tuple(self.viable(t, c) for t in nexts))
        groups = self._templates.get(key)
        if groups is None:
            groups = self._templates[key] = self._template(self._frame_moves_uncached((self, s, count, None, None)), count, c)
        out: dict = {}
        for part, data in groups:
            if part is None:
                frame = DONE_FRAME
            else:
                frame = (self, part[0], c if part[1] is None else count, None, part[1])
            out.update(dict.fromkeys(data, frame))
        return out

    @staticmethod
    def _template(moves: dict, count: int, c: int) -> tuple:
        """((dfa state, pending) or None for the closing quote, bytes) groups of a boundary frame's moves."""
        by: dict = {}
        for b, frame in moves.items():
            part = None if frame is DONE_FRAME else (frame[1], frame[4])
            # every successor is a new character (count c, nothing pending) or a character begun (count, pending)
            assert part is None or frame[2] == (c if frame[4] is None else count)
            by.setdefault(part, []).append(b)
        return tuple((part, tuple(data)) for part, data in by.items())

    def moves(self, frame) -> dict:
        if frame[1] is None:
            return {_QUOTE: (self, self.dfa.initial, 0, "" if self.exclude else None, None)}
        if frame[4] is None and frame[3] is None:
            return self._boundary_moves(frame[1], frame[2])
        return self._frame_moves_uncached(frame)

    def _frame_moves_uncached(self, frame) -> dict:
        _, s, count, decoded, pending = frame
        out = {}
        if pending is None:
            if s in self.dfa.finals and count >= self.min_length and (decoded is None or decoded not in self.exclude):
                out[_QUOTE] = DONE_FRAME
            esc = (self, s, count, decoded, ("esc",))
            if self.moves(esc):
                out[_BACKSLASH] = esc
            row = self.dfa.ascii_row(s)
            c = min(count + 1, self._cap) if self.max_length is None else count + 1
            # NOTE: most bytes lead to one of a few DFA states: each one's viability and successor frame is found once
            # per call (this runs once per new count while decoding a string).
            nxt_of: dict = {}
            for b in range(0x20, 0x80):
                t = row[b]
                if t is None or b == _QUOTE or b == _BACKSLASH:
                    continue
                if decoded is not None:
                    if self.viable(t, c):
                        d = decoded + chr(b)
                        out[b] = (self, t, c, d if d in self._exclude_prefixes else None, None)
                    continue
                nxt = nxt_of.get(t, nxt_of)
                if nxt is nxt_of:
                    nxt = nxt_of[t] = (self, t, c, None, None) if self.viable(t, c) else None
                if nxt is not None:
                    out[b] = nxt
            live: dict = {}
            for b, (rng, rest, span) in LEAD_BYTES.items():
                if rng is None:
                    continue
                ok = live.get(rng)
                if ok is None:
                    ok = live[rng] = any(self.viable(t, c) for t in self.dfa.next_states_in_range(s, *rng))
                if not ok:
                    continue
                if self.dfa.uniform_symbol(*rng) is not None and not self._continues_excluded(decoded, *rng):
                    out[b] = (self, s, count, None, ("u8*", rest, span))
                else:
                    out[b] = (self, s, count, decoded, ("u8", bytes([b])))
            return out
        kind = pending[0]
        if kind == "u8*":
            rest, (lo, hi) = pending[1], pending[2]
            if rest == 1:
                t = self.dfa.step_symbol(s, self.dfa.else_symbol)
                c = min(count + 1, self._cap) if self.max_length is None else count + 1
                if t is not None and self.viable(t, c):
                    nxt = (self, t, c, None, None)
                    for b in range(lo, hi + 1):
                        out[b] = nxt
            else:
                nxt = (self, s, count, None, ("u8*", rest - 1, (0x80, 0xBF)))
                for b in range(lo, hi + 1):
                    out[b] = nxt
        elif kind == "u8":
            for b in range(0x80, 0xC0):
                p = pending[1] + bytes([b])
                rng = utf8_prefix_range(p)
                if rng is None:
                    continue
                if len(p) == utf8_sequence_length(p[0]):
                    nxt = self._advance(s, count, decoded, rng[0])
                    if nxt is not None:
                        out[b] = nxt
                elif self._range_viable(s, count, *rng):
                    out[b] = (self, s, count, decoded, ("u8", p))
        elif kind == "esc":
            for b, cp in _SIMPLE_ESCAPES.items():
                nxt = self._advance(s, count, decoded, cp)
                if nxt is not None:
                    out[b] = nxt
            if self._hex_viable(s, count, ""):
                out[ord("u")] = (self, s, count, decoded, ("hex", ""))
        elif kind == "hex":
            digits = pending[1]
            for b, v in _HEX.items():
                d = digits + "%x" % v
                if len(d) < 4:
                    if self._hex_viable(s, count, d):
                        out[b] = (self, s, count, decoded, ("hex", d))
                    continue
                cp = int(d, 16)
                if _HIGH[0] <= cp <= _HIGH[1]:
                    if self._low_viable(s, count, cp, ""):
                        out[b] = (self, s, count, decoded, ("lo?", cp))
                elif not _LOW[0] <= cp <= _LOW[1]:
                    nxt = self._advance(s, count, decoded, cp)
                    if nxt is not None:
                        out[b] = nxt
        elif kind == "lo?":
            out[_BACKSLASH] = (self, s, count, decoded, ("lou", pending[1]))
        elif kind == "lou":
            out[ord("u")] = (self, s, count, decoded, ("lohex", pending[1], ""))
        elif kind == "lohex":
            high, digits = pending[1], pending[2]
            for b, v in _HEX.items():
                d = digits + "%x" % v
                if len(d) < 4:
                    if self._low_viable(s, count, high, d):
                        out[b] = (self, s, count, decoded, ("lohex", high, d))
                    continue
                low = int(d, 16)
                if _LOW[0] <= low <= _LOW[1]:
                    nxt = self._advance(s, count, decoded, _astral(high, low, low)[0])
                    if nxt is not None:
                        out[b] = nxt
        return out

    def epsilon(self, frame):
        return ()


