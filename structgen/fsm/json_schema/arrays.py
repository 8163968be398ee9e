"""The JSON array node: `prefixItems` then `items`, with minItems / maxItems, and `uniqueItems`.

Frame = (node, count, phase): `count` = items read so far (capped where larger counts behave alike),
phase START / NEXT (after an item or the opening bracket) / ITEM (separator read, item comes).

uniqueItems is not regular, so the automaton only marks where it must be checked: after each item a unique array reads
the separator or closing bracket itself, from the frame (node, count, POST, newlines, spaces), SEP / CLOSED once read.
NOTE: a POST frame with nothing read yet (0, 0) exists only in the state right after the byte that completed an item:
a configuration holding one is *guarded* (the cursor drops it when that item equals an earlier one of the array,
structgen/fsm/unique_cursor.py). Counts are never capped in a unique array (a cap would merge arrays of different
lengths, harmless here since items are told apart at run time).
"""

from __future__ import annotations

from .nodes import GOTO, NEVER, POP, PUSH, Literal, Node

START, NEXT, ITEM, POST, SEP, CLOSED = 0, 1, 2, 3, 4, 5
_SPACE_AFTER_COMMA = Literal([b"", b" "])  # compact mode: `,` or `, ` (as Compiler._punct(",", True))


def possible_positions(prefix, items):
    """(prefix, items) cut where a position cannot hold any value: an unsatisfiable prefix position ends the array
    there (items None: no more items), as does an unsatisfiable `items`."""
    for k, p in enumerate(prefix):
        if p is NEVER:
            return list(prefix[:k]), None
    return prefix, None if items is NEVER else items


class JsonArray(Node):
    __slots__ = ("prefix", "items", "min_items", "max_items", "open", "close", "sep", "_cap", "unique", "ws")

    def __init__(self, prefix, items, min_items, max_items, open_, close, sep, unique=False, ws=None):
        self.prefix, self.items = tuple(prefix), items
        self.min_items, self.max_items = min_items, max_items
        self.open, self.close, self.sep = open_, close, sep
        self._cap = max_items if max_items is not None else max(1, min_items, len(self.prefix))
        self.unique = unique
        self.ws = ws  # unique arrays in flexible mode: the Whitespace around `,` and before `]` (None: compact)

    @classmethod
    def build(cls, prefix, items, min_items, max_items, open_, close, sep, unique=False, ws=None) -> Node:
        """prefix: nodes of the first positions; items: node for the rest (None = no more items)."""
        prefix, items = possible_positions(prefix, items)
        if items is None:
            max_items = len(prefix) if max_items is None else min(max_items, len(prefix))
        if max_items is not None and min_items > max_items:
            return NEVER
        unique = unique and (max_items is None or max_items > 1)  # at most one item is always unique
        return cls(prefix, items, min_items, max_items, open_, close, sep, unique, ws)

    def _item(self, k: int) -> Node:
        return self.prefix[k] if k < len(self.prefix) else self.items

    def _after(self, count: int) -> int:
        return count + 1 if self.max_items is not None or self.unique else min(count + 1, self._cap)

    def guarded(self, frame) -> bool:
        """Whether `frame` is a guarded leaf: right after an item of a unique array, nothing read yet."""
        return len(frame) == 5 and frame[3] == 0 and frame[4] == 0

    def exit_bytes(self, frame, child_exit) -> float | None:
        """The fewest bytes until this frame pops, in closed form after the opening bracket (None: at START, where the
        matcher searches). NOTE: the shortest way out adds items only up to min_items (each costs >= 1 byte) and then
        closes; one item after another, `items` past the prefix all alike, so it is a sum, not a walk over counts.
        A unique array's POST / SEP cost what NEXT / ITEM do (its `]` and `,` are one byte, whitespace optional)."""
        _, count, phase = frame[:3]
        if phase == START:
            return None
        if phase == CLOSED:
            return 0
        if phase in (ITEM, SEP):
            return child_exit(self._item(count).entry()) + self.exit_bytes((self, self._after(count), NEXT), child_exit)
        total = child_exit(self.close.entry())
        if count >= self.min_items:
            return total
        sep = child_exit(self.sep.entry())
        for k in range(count, min(self.min_items, len(self.prefix))):
            total += (sep if k else 0) + child_exit(self.prefix[k].entry())
        rest = self.min_items - max(count, len(self.prefix))
        if rest > 0:
            first = max(count, len(self.prefix))
            item = child_exit(self.items.entry())
            total += rest * (sep + item) - (sep if first == 0 else 0)
        return total

    def entry(self):
        return (self, 0, START)

    def moves(self, frame):
        if frame[2] != POST:
            return {}
        _, count, _, nl, sp = frame
        out = {}
        if self.ws is not None:
            if nl < self.ws.max_newlines:
                out[0x0A] = (self, count, POST, nl + 1, sp)
            if sp < self.ws.max_spaces:
                out[0x20] = (self, count, POST, nl, sp + 1)
        if count >= self.min_items:
            out[0x5D] = (self, count, CLOSED)
        if self.max_items is None or count < self.max_items:
            out[0x2C] = (self, count, SEP)
        return out

    def epsilon(self, frame):
        _, count, phase = frame[:3]
        if phase == START:
            return ((PUSH, self.open.entry(), (self, 0, NEXT)),)
        if phase == ITEM:
            nxt = self._after(count)
            resume = (self, nxt, POST, 0, 0) if self.unique else (self, nxt, NEXT)
            return ((PUSH, self._item(count).entry(), resume),)
        if phase == SEP:
            tail = self.ws if self.ws is not None else _SPACE_AFTER_COMMA
            return ((PUSH, tail.entry(), (self, count, ITEM)),)
        if phase == CLOSED:
            return ((POP,),)
        if phase == POST:
            return ()
        acts = []
        if count >= self.min_items:
            acts.append((GOTO, self.close.entry()))
        if self.max_items is None or count < self.max_items:
            if count == 0:
                acts.append((GOTO, (self, 0, ITEM)))
            else:
                acts.append((PUSH, self.sep.entry(), (self, count, ITEM)))
        return tuple(acts)
