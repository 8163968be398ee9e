"""The JSON object node: declared properties in `properties` order (optional ones may be skipped, required
ones must appear), then extra keys if the schema allows them, with property-count bounds.

Frame = (node, index, count, phase): `index` = next declared property that may come, `count` = properties
emitted (capped where larger counts behave alike), phase START / KEY / VALUE / EXTRA_VALUE.
"""

from __future__ import annotations

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
                 "max_props", "_cap", "_last_required", "_required_from")

    def __init__(self, props, open_, close, extra_first, extra_next, extra_value, min_props, max_props):
        self.props = tuple(props)
        self.open, self.close = open_, close
        self.extra_first, self.extra_next, self.extra_value = extra_first, extra_next, extra_value
        self.min_props, self.max_props = min_props, max_props
        self._cap = max(1, (max_props + 1) if max_props is not None else min_props)
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

    def _can_reach_min(self, index: int, count: int) -> bool:
        if count >= self.min_props or self.extra_value is not None:
            return True
        return count + len(self.props) - index >= self.min_props

    def _bump(self, count: int) -> int:
        return min(count + 1, self._cap)

    def entry(self):
        return (self, 0, 0, START)

    def epsilon(self, frame):
        _, i, count, phase = frame
        if phase == START:
            return ((PUSH, self.open.entry(), (self, 0, 0, KEY)),)
        if phase == VALUE:
            return ((PUSH, self.props[i].value.entry(), (self, i + 1, self._bump(count), KEY)),)
        if phase == EXTRA_VALUE:
            return ((PUSH, self.extra_value.entry(), (self, i, self._bump(count), KEY)),)
        acts = []
        room = self.max_props is None or count < self.max_props
        for j in range(i, len(self.props)):
            p = self.props[j]
            after = self._bump(count)
            fits = self.max_props is None or count + 1 + self._required_from[j + 1] <= self.max_props
            if room and fits and self._can_reach_min(j + 1, after):
                key = p.next_key if count else p.first_key
                acts.append((PUSH, key.entry(), (self, j, count, VALUE)))
            if p.required:
                break
        if self._required_from[i] == 0:
            if self.extra_value is not None and room:
                key = self.extra_next if count else self.extra_first
                acts.append((PUSH, key.entry(), (self, len(self.props), count, EXTRA_VALUE)))
            if count >= self.min_props:
                acts.append((GOTO, self.close.entry()))
        return tuple(acts)
