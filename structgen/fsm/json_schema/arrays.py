"""The JSON array node: `prefixItems` then `items`, with minItems / maxItems.

Frame = (node, count, phase): `count` = items read so far (capped where larger counts behave alike),
phase START / NEXT (after an item or the opening bracket) / ITEM (separator read, item comes).
"""

from __future__ import annotations

from .nodes import GOTO, NEVER, PUSH, Node

START, NEXT, ITEM = 0, 1, 2


class JsonArray(Node):
    __slots__ = ("prefix", "items", "min_items", "max_items", "open", "close", "sep", "_cap")

    def __init__(self, prefix, items, min_items, max_items, open_, close, sep):
        self.prefix, self.items = tuple(prefix), items
        self.min_items, self.max_items = min_items, max_items
        self.open, self.close, self.sep = open_, close, sep
        self._cap = max_items if max_items is not None else max(1, min_items, len(self.prefix))

    @classmethod
    def build(cls, prefix, items, min_items, max_items, open_, close, sep) -> Node:
        """prefix: nodes of the first positions; items: node for the rest (None = no more items)."""
        limit = None
        for k, p in enumerate(prefix):
            if p is NEVER:
                limit, prefix = k, prefix[:k]
                items = None
                break
        if items is NEVER or items is None:
            items = None
            limit = len(prefix)
        if limit is not None:
            max_items = limit if max_items is None else min(max_items, limit)
        if max_items is not None and min_items > max_items:
            return NEVER
        return cls(prefix, items, min_items, max_items, open_, close, sep)

    def _item(self, k: int) -> Node:
        return self.prefix[k] if k < len(self.prefix) else self.items

    def exit_bytes(self, frame, child_exit) -> float | None:
        """The fewest bytes until this frame pops, in closed form after the opening bracket (None: at START, where the
        matcher searches). NOTE: the shortest way out adds items only up to min_items (each costs >= 1 byte) and then
        closes; one item after another, `items` past the prefix all alike, so it is a sum, not a walk over counts."""
        _, count, phase = frame
        if phase == START:
            return None
        if phase == ITEM:
            nxt = count + 1 if self.max_items is not None else min(count + 1, self._cap)
            return child_exit(self._item(count).entry()) + self.exit_bytes((self, nxt, NEXT), child_exit)
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

    def epsilon(self, frame):
        _, count, phase = frame
        if phase == START:
            return ((PUSH, self.open.entry(), (self, 0, NEXT)),)
        if phase == ITEM:
            nxt = count + 1 if self.max_items is not None else min(count + 1, self._cap)
            return ((PUSH, self._item(count).entry(), (self, nxt, NEXT)),)
        acts = []
        if count >= self.min_items:
            acts.append((GOTO, self.close.entry()))
        if self.max_items is None or count < self.max_items:
            if count == 0:
                acts.append((GOTO, (self, 0, ITEM)))
            else:
                acts.append((PUSH, self.sep.entry(), (self, count, ITEM)))
        return tuple(acts)
