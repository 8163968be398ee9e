"""The JSON object node: declared properties in `properties` order (optional ones may be skipped, required
ones must appear), then extra keys if the schema allows them, with property-count bounds.

Frame = (node, index, count, phase, distinct): `index` = next declared property that may come (len(props) + 1 once an
extra key was read), `count` = members read, `distinct` = members that are surely distinct keys (declared ones, plus
one for any number of extras); both capped where larger values behave alike. Phase START / KEY / VALUE / EXTRA_VALUE.

NOTE: extra keys are any strings but the declared names, so two of them may be the same key, and a parser keeps one:
`{"a":1,"a":2}` is one property. maxProperties holds whatever the repeats (it counts every member); minProperties counts
`distinct`, so a repeated extra key can never be what makes an object long enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .nodes import GOTO, NEVER, PUSH, Node

START, KEY, VALUE, EXTRA_VALUE = 0, 1, 2, 3


@dataclass(frozen=True, eq=False)
class Property:
    name: str
    first_key: Node  # `"name":` as the first member (opening brace already read)
    next_key: Node  # `, "name":` after another member
    value: Node
    required: bool


class JsonObject(Node):
    __slots__ = ("props", "open", "close", "extra_first", "extra_next", "extra_value", "min_props",
                 "max_props", "_cap", "_dcap", "_last_required", "_required_from")

    def __init__(self, props, open_, close, extra_first, extra_next, extra_value, min_props, max_props):
        self.props = tuple(props)
        self.open, self.close = open_, close
        self.extra_first, self.extra_next, self.extra_value = extra_first, extra_next, extra_value
        self.min_props, self.max_props = min_props, max_props
        self._cap = max(1, (max_props + 1) if max_props is not None else min_props)
        self._dcap = max(1, min_props)
        n = len(self.props)
        self._required_from = [0] * (n + 1)  # required properties at index >= i
        for i in range(n - 1, -1, -1):
            self._required_from[i] = self._required_from[i + 1] + (1 if self.props[i].required else 0)

    @classmethod
    def build(cls, props, open_, close, extra=None, min_props=0, max_props=None) -> Node:
        """props: [(name, first_key, next_key, value, required)]; extra: (first_key, next_key, value) or None."""
        kept = []
        for name, first_key, next_key, value, required in props:
            if value is NEVER:
                if required:
                    return NEVER
                continue
            kept.append(Property(name, first_key, next_key, value, required))
        if extra is not None and extra[2] is NEVER:
            extra = None
        extra_first, extra_next, extra_value = extra if extra else (None, None, None)
        node = cls(kept, open_, close, extra_first, extra_next, extra_value, min_props, max_props)
        if max_props is not None and node._required_from[0] > max_props:
            return NEVER
        if not node._can_reach_min(0, 0) or (max_props is not None and min_props > max_props):
            return NEVER
        return node

    def _can_reach_min(self, index: int, distinct: int) -> bool:
        """Whether the declared properties from `index` on, and one extra key if none came yet, can still make up
        min_properties."""
        more = max(0, len(self.props) - index) + (1 if self.extra_value is not None and index <= len(self.props) else 0)
        return distinct + more >= self.min_props

    def _bump(self, count: int) -> int:
        return min(count + 1, self._cap)

    def _dbump(self, distinct: int) -> int:
        return min(distinct + 1, self._dcap)

    def exit_bytes(self, frame, child_exit) -> float | None:
        """The fewest bytes until this frame pops, in closed form between members (None elsewhere: the matcher
        searches a key or value, then lands here again).

        NOTE: the shortest way out takes every required property still ahead, the cheapest optional ones (and at
        most one extra key) that min_properties still needs, and closes: a sort, where the frame-by-frame search
        walked every choice of properties (an object of 5000 optional properties held decoding for 90 s). The first
        member's key lacks the comma: every key form here saves the same bytes (one comma), else the search decides."""
        _, i, count, phase, distinct = frame
        if phase != KEY:
            return None
        n = len(self.props)
        saved = set()
        required_cost, required_n, optional = 0, 0, []
        for j in range(i, n):
            p = self.props[j]
            nxt = child_exit(p.next_key.entry())
            saved.add(nxt - child_exit(p.first_key.entry()))
            cost = nxt + child_exit(p.value.entry())
            if p.required:
                required_cost, required_n = required_cost + cost, required_n + 1
            else:
                optional.append(cost)
        if self.extra_value is not None and i <= n:  # an extra key counts once (they may repeat)
            nxt = child_exit(self.extra_next.entry())
            saved.add(nxt - child_exit(self.extra_first.entry()))
            optional.append(nxt + child_exit(self.extra_value.entry()))
        if len(saved) > 1:
            return None
        need = max(0, self.min_props - distinct - required_n)
        members = required_n + need
        if need > len(optional) or (self.max_props is not None and count + members > self.max_props):
            return math.inf
        optional.sort()
        total = required_cost + sum(optional[:need]) + child_exit(self.close.entry())
        if members and not count:
            total -= saved.pop()
        return total

    def entry(self):
        return (self, 0, 0, START, 0)

    def epsilon(self, frame):
        _, i, count, phase, distinct = frame
        n = len(self.props)
        if phase == START:
            return ((PUSH, self.open.entry(), (self, 0, 0, KEY, 0)),)
        if phase == VALUE:
            return ((PUSH, self.props[i].value.entry(), (self, i + 1, self._bump(count), KEY, self._dbump(distinct))),)
        if phase == EXTRA_VALUE:
            return ((PUSH, self.extra_value.entry(), (self, n + 1, self._bump(count), KEY, distinct)),)
        acts = []
        room = self.max_props is None or count < self.max_props
        for j in range(i, n):
            p = self.props[j]
            fits = self.max_props is None or count + 1 + self._required_from[j + 1] <= self.max_props
            if room and fits and self._can_reach_min(j + 1, self._dbump(distinct)):
                key = p.next_key if count else p.first_key
                acts.append((PUSH, key.entry(), (self, j, count, VALUE, distinct)))
            if p.required:
                break
        if self._required_from[min(i, n)] == 0:
            if self.extra_value is not None and room:
                first = i <= n  # the first extra key counts as one more distinct key; repeats may not
                after = self._dbump(distinct) if first else distinct
                if after >= self.min_props:  # no declared property can follow an extra one
                    key = self.extra_next if count else self.extra_first
                    acts.append((PUSH, key.entry(), (self, n + 1, count, EXTRA_VALUE, after)))
            if distinct >= self.min_props:
                acts.append((GOTO, self.close.entry()))
        return tuple(acts)
