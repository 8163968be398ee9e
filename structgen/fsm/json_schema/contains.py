"""The JSON array node with `contains` / `minContains` / `maxContains`: a bounded counter of the items that match.

Each item is read by one of two `Combine` leaves over the same parts (the item's own schema and the `contains` test):
*hit* (both accept) or *miss* (the item's schema accepts, the test does not); the subset construction runs both, and
each resumes the array with its own count. Frame = (node, count, phase, matched): `count` as in JsonArray (capped
where larger counts behave alike), `matched` = hits so far, exact up to maxContains (a hit past it is not offered),
else capped at minContains.

NOTE: `contains` is a condition (its rejection matters), so it is compiled in condition mode (combine.py).
"""

from __future__ import annotations

from .combine import Combine, Term
from .nodes import GOTO, NEVER, PUSH, Node

START, NEXT, ITEM = 0, 1, 2
_HIT = (Term(final=frozenset({0, 1})),)
_MISS = (Term(final=frozenset({0}), not_final=frozenset({1})),)


class JsonContainsArray(Node):
    __slots__ = ("prefix", "items", "hits", "misses", "min_items", "max_items", "min_contains", "max_contains",
                 "open", "close", "sep", "_cap", "_mcap", "_viable_memo")

    def __init__(self, prefix, items, hits, misses, min_items, max_items, min_contains, max_contains, open_, close,
                 sep):
        self.prefix, self.items = tuple(prefix), items
        self.hits, self.misses = tuple(hits), tuple(misses)  # per prefix position, then one for `items` (or NEVER)
        self.min_items, self.max_items = min_items, max_items
        self.min_contains, self.max_contains = min_contains, max_contains
        self.open, self.close, self.sep = open_, close, sep
        self._cap = max_items if max_items is not None else max(1, min_items, len(self.prefix))
        self._mcap = max_contains if max_contains is not None else min_contains
        self._viable_memo: dict = {}

    @classmethod
    def build(cls, prefix, items, test, min_items, max_items, min_contains, max_contains, open_, close, sep) -> Node:
        """prefix: nodes of the first positions; items: the node for the rest (None = no more items); test: the
        `contains` schema's condition node (True: a schema every value matches)."""
        hits, misses = [], []
        for p in list(prefix) + [items if items is not None else NEVER]:
            if test is True:  # a test every value passes: each item is a hit
                hit, miss = p, NEVER
            elif p is NEVER or test is NEVER:
                hit = NEVER
                miss = p
            else:
                hit = Combine.build((p, test), _HIT, "contains")
                miss = Combine.build((p, test), _MISS, "contains (an item that does not match)", share=hit)
            hits.append(hit)
            misses.append(miss)
        if max_contains is not None and min_contains > max_contains:
            return NEVER
        node = cls(prefix, items, hits, misses, min_items, max_items, min_contains, max_contains, open_, close, sep)
        return node if node._viable(0, 0) else NEVER

    def _slot(self, k: int) -> int:
        return min(k, len(self.prefix))

    def _bump(self, count: int) -> int:
        return count + 1 if self.max_items is not None else min(count + 1, self._cap)

    def _mbump(self, matched: int) -> int:
        return matched + 1 if self.max_contains is not None else min(matched + 1, self._mcap)

    def _hit_ok(self, count: int, matched: int) -> bool:
        return self.hits[self._slot(count)] is not NEVER and (self.max_contains is None or matched < self.max_contains)

    def _viable(self, count: int, matched: int) -> bool:
        """Whether the array can still close validly from (count, matched) after an item (or the opening bracket)."""
        key = (count, matched)
        hit = self._viable_memo.get(key)
        if hit is None:
            hit = self._viable_memo[key] = self._viable_uncached(count, matched)
        return hit

    def _viable_uncached(self, count: int, matched: int) -> bool:
        if count >= self.min_items and matched >= self.min_contains:
            return True
        if self.max_items is not None and count >= self.max_items:
            return False
        if count < len(self.prefix):  # the prefix: position by position (few)
            return ((self._hit_ok(count, matched) and self._viable(count + 1, self._mbump(matched)))
                    or (self.misses[count] is not NEVER and self._viable(count + 1, matched)))
        # Past the prefix every position is alike: closed form.
        hit_ok, miss_ok = self.hits[-1] is not NEVER, self.misses[-1] is not NEVER
        room = None if self.max_items is None else self.max_items - count
        hit_room = None if self.max_contains is None else self.max_contains - matched
        need_hits = max(0, self.min_contains - matched)
        need_items = max(0, self.min_items - count)
        if need_hits and not hit_ok:
            return False
        if (room is not None and need_hits > room) or (hit_room is not None and need_hits > hit_room):
            return False
        if miss_ok:
            return room is None or need_items <= room
        # Every item added is a hit: as many as the larger need, within both rooms.
        added = max(need_items, need_hits)
        return hit_ok and (room is None or added <= room) and (hit_room is None or added <= hit_room)

    def entry(self):
        return (self, 0, START, 0)

    def epsilon(self, frame):
        _, count, phase, matched = frame
        if phase == START:
            return ((PUSH, self.open.entry(), (self, 0, NEXT, 0)),)
        if phase == ITEM:
            acts = []
            nxt = self._bump(count)
            k = self._slot(count)
            if self._hit_ok(count, matched) and self._viable(nxt, self._mbump(matched)):
                acts.append((PUSH, self.hits[k].entry(), (self, nxt, NEXT, self._mbump(matched))))
            if self.misses[k] is not NEVER and self._viable(nxt, matched):
                acts.append((PUSH, self.misses[k].entry(), (self, nxt, NEXT, matched)))
            return tuple(acts)
        acts = []
        if count >= self.min_items and matched >= self.min_contains:
            acts.append((GOTO, self.close.entry()))
        if self._can_add(count, matched):
            if count == 0:
                acts.append((GOTO, (self, 0, ITEM, matched)))
            else:
                acts.append((PUSH, self.sep.entry(), (self, count, ITEM, matched)))
        return tuple(acts)

    def _can_add(self, count: int, matched: int) -> bool:
        if self.max_items is not None and count >= self.max_items:
            return False
        nxt, k = self._bump(count), self._slot(count)
        return ((self._hit_ok(count, matched) and self._viable(nxt, self._mbump(matched)))
                or (self.misses[k] is not NEVER and self._viable(nxt, matched)))

