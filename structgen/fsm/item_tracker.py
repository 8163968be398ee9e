"""Where a JSON text stands structurally, per byte, and what its open arrays hold: the run-time half of uniqueItems.

`Track` values are immutable (a new one per structural byte; plain bytes inside a string share one), so a cursor keeps
one per accepted token for rollback and a speculative walk costs no copies. A track reads the text it was fed from the
caller's buffer (`text`), by position: the caller keeps the buffer and the tracks in step (structgen/fsm/unique_cursor.py).

Items are kept as their text and compared under JSON Schema's equality (1 == 1.0, objects whatever their key order,
strings after unescaping: json_schema.distinct.instance_key of the parsed value), keyed lazily: only arrays that are
checked ever parse their items.
"""

from __future__ import annotations

import json

from .json_schema.distinct import instance_key

_WS = frozenset(b" \t\n\r")
_QUOTE, _BACKSLASH = 0x22, 0x5C
_OPEN_ARRAY, _CLOSE_ARRAY, _OPEN_OBJECT, _CLOSE_OBJECT, _COMMA = 0x5B, 0x5D, 0x7B, 0x7D, 0x2C
OUTSIDE, IN_STRING, ESCAPED = 0, 1, 2


class Items:
    """The completed items of one array, newest first (a shared linked list). `keys` caches the set of their keys on
    the newest node asked for it. NOTE: a node hands its set on to the next one asked (then forgets it: one set per
    array, not one per item), so a cursor's tracks must not be shared with another thread's cursor (Cursor.copy
    rebuilds them)."""

    __slots__ = ("text", "prev", "keys")

    def __init__(self, text: bytes, prev: "Items | None"):
        self.text, self.prev, self.keys = text, prev, None


class Open:
    """An open container: an array (with where its current item starts, -1 before it does, and its completed items)
    or an object. Immutable."""

    __slots__ = ("array", "start", "items", "parent")

    def __init__(self, array: bool, start: int, items: Items | None, parent: "Open | None"):
        self.array, self.start, self.items, self.parent = array, start, items, parent


class Track:
    """The lexical mode (OUTSIDE, IN_STRING, ESCAPED) and the innermost open container. Immutable."""

    __slots__ = ("mode", "top")

    def __init__(self, mode: int, top: Open | None):
        self.mode, self.top = mode, top


EMPTY = Track(OUTSIDE, None)


def feed(track: Track, text, start: int, end: int) -> Track:
    """The track after text[start:end] (bytes the automaton accepted: well-formed JSON so far)."""
    mode, top = track.mode, track.top
    changed = False
    for pos in range(start, end):
        b = text[pos]
        if mode == IN_STRING:
            if b == _QUOTE:
                mode, changed = OUTSIDE, True
            elif b == _BACKSLASH:
                mode, changed = ESCAPED, True
            continue
        if mode == ESCAPED:
            mode, changed = IN_STRING, True
            continue
        if b in _WS:
            continue
        changed = True
        if top is not None and top.array and top.start < 0 and b != _CLOSE_ARRAY:
            top = Open(True, pos, top.items, top.parent)  # the first byte of an item
        if b == _QUOTE:
            mode = IN_STRING
        elif b == _OPEN_ARRAY:
            top = Open(True, -1, None, top)
        elif b == _OPEN_OBJECT:
            top = Open(False, -1, None, top)
        elif b == _CLOSE_ARRAY or b == _CLOSE_OBJECT:
            top = top.parent
        elif b == _COMMA and top.array:
            top = Open(True, -1, Items(bytes(text[top.start:pos]).rstrip(b" \t\n\r"), top.items), top.parent)
    return Track(mode, top) if changed else track


class ItemKeys:
    """Keys of item texts, memoized by text (shared by a cursor and its copies: a pure function)."""

    __slots__ = ("_memo",)

    def __init__(self):
        self._memo: dict = {}

    def key(self, item: bytes):
        hit = self._memo.get(item)
        if hit is None:
            hit = self._memo[item] = instance_key(json.loads(item))
        return hit

    def keys_of(self, items: Items | None) -> set:
        """The keys of every item in `items` (a set owned by the newest node; do not keep it past the next call)."""
        if items is None:
            return set()
        if items.keys is not None:
            return items.keys
        chain = []
        node = items
        while node is not None and node.keys is None:
            chain.append(node)
            node = node.prev
        if node is None:
            base = set()
        else:
            base, node.keys = node.keys, None  # handed on: rolling back to `node` rebuilds its set once
        for n in reversed(chain):
            base.add(self.key(n.text))
        items.keys = base
        return base

    def repeats(self, track: Track, text, end: int) -> bool:
        """Whether the item that text[:end] just completed (in the innermost open array) equals an earlier item of it.

        NOTE: called only where the automaton says an item of a unique array was completed by the byte at end - 1;
        JSON text parses one way, so that array is the innermost open container here."""
        top = track.top
        if top is None or not top.array or top.start < 0:
            raise RuntimeError("internal error: an item check outside an array item (tracker and automaton disagree)")
        if top.items is None:
            return False
        return self.key(bytes(text[top.start:end])) in self.keys_of(top.items)
