"""How many distinct JSON values the parts of a node graph can still produce: what uniqueItems needs to know statically.

A unique array's item is checked at run time (structgen/fsm/unique_cursor.py), so an automaton state can be productive
and still a dead end for one request: every way on may close an item equal to an earlier one. This module answers,
without the request's text, where that cannot happen:

- `open` node / frame: it can still produce at least MANY distinct values (more than any output can hold items), so
  whatever the earlier items were, one of its completions differs from all of them;
- `safe(state)`: some configuration of the state completes whatever the earlier items are (the cursor searches only
  from states that are not safe);
- `unique_limits(...)`: at compile time, a unique array's maxItems capped by the number of values its items have,
  and the arrays whose minItems could not be decided are refused.

Everything here is conservative: False / None mean "not known", never a wrong "yes". Nodes it does not know (added by
other keywords later) are simply not open.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

from ...errors import UnsupportedSchemaError
from ..regex import utf8_prefix_range
from .arrays import ITEM, NEXT, POST, JsonArray, possible_positions
from .lengths import walks_of
from .nodes import NEVER, Alt, Literal, Node, Seq
from .numbers import MAX_DIGITS, JsonNumber
from .objects import JsonObject
from .strings import _SIMPLE_ESCAPES, JsonString

# More distinct values than any request can emit items (an item takes at least one token and a separator).
MANY = 1 << 20
# Most values an item language is enumerated to (enum options, small integer ranges) to count them exactly.
MAX_ENUMERATED = 4096
# Most string lengths a string's distinct completions are counted over before giving up (not open).
_COUNT_STEPS = 64
_SURROGATES = 0x800
_CODE_POINTS = 0x110000
_PRINTABLE_ASCII = 0x7F - 0x20


def instance_key(v):
    """A hashable key of a parsed JSON value under which values are equal exactly when JSON Schema calls them equal
    (1 == 1.0, True != 1, objects whatever their key order). NOTE: numbers compare as the exact value Python parsed,
    as jsonschema compares them (normalize.value_key reads floats by their repr, a shade coarser)."""
    if isinstance(v, bool):
        return ("b", v)
    if v is None:
        return ("z",)
    if isinstance(v, str):
        return ("s", v)
    if isinstance(v, (int, float, Fraction)):
        return ("n", Fraction(v))
    if isinstance(v, list):
        return ("l", tuple(instance_key(x) for x in v))
    return ("d", frozenset((k, instance_key(x)) for k, x in v.items()))


class DistinctValues:
    """The static questions above for one node graph; memoized (per node / DFA / frame) and not thread-safe (the
    automaton that owns it is driven under its index's lock)."""

    def __init__(self):
        self._open: dict = {}
        self._keys: dict = {}
        self._string: dict = {}
        self._sizes: dict = {}

    # ---- nodes -------------------------------------------------------------------------------------------------

    def node_open(self, node) -> bool:
        """Whether `node` can produce at least MANY distinct values."""
        hit = self._open.get(node)
        if hit is None:
            self._open[node] = False  # NOTE: the graph is acyclic ($ref unrolled); this only guards a loop
            hit = self._open[node] = self._node_open(node)
        return hit

    def _node_open(self, node) -> bool:
        if isinstance(node, JsonString):
            return self._string_open(node, node.dfa.initial, 0)
        if isinstance(node, JsonNumber):
            return self._number_count(node) >= MANY
        if isinstance(node, (Seq,)):
            return any(self.node_open(p) for p in node.parts)
        if isinstance(node, Alt):
            return any(self.node_open(b) for b in node.branches)
        if isinstance(node, JsonArray):
            return self._array_open(node, 0)
        if isinstance(node, JsonObject):
            return self._object_open(node, True)
        return False

    def value_count(self, node) -> int | None:
        """The number of distinct values of `node` (MANY when it is at least that), None when not known."""
        if self.node_open(node):
            return MANY
        keys = self.value_keys(node)
        return None if keys is None else len(keys)

    def value_keys(self, node) -> frozenset | None:
        """The instance_key of every value of `node` when they are few (<= MAX_ENUMERATED) and known, else None."""
        if node in self._keys:
            return self._keys[node]
        out = self._keys[node] = self._value_keys(node)
        return out

    def _value_keys(self, node) -> frozenset | None:
        if isinstance(node, Literal):
            try:
                keys = frozenset(instance_key(json.loads(o)) for o in node.options)
            except ValueError:
                return None
            return keys if len(keys) <= MAX_ENUMERATED else None
        if isinstance(node, Alt):
            out: set = set()
            for b in node.branches:
                k = self.value_keys(b)
                if k is None:
                    return None
                out |= k
            return frozenset(out) if len(out) <= MAX_ENUMERATED else None
        if isinstance(node, JsonNumber):
            values = self._few_numbers(node)
            return None if values is None else frozenset(instance_key(v) for v in values)
        return None

    # ---- numbers -----------------------------------------------------------------------------------------------

    @staticmethod
    def _integer_span(node) -> tuple | None:
        """(first, last, step) of the integers a number node admits when it admits only integers in a finite range."""
        if not (node.integer or node.mult is not None) or node.lo is None or node.hi is None:
            return None
        step = node.mult if node.mult is not None else Fraction(1)
        first = math.floor(node.lo / step) + 1 if node.lo_excl else math.ceil(node.lo / step)
        last = math.ceil(node.hi / step) - 1 if node.hi_excl else math.floor(node.hi / step)
        return first, last, step

    def _number_count(self, node) -> int:
        """A lower bound of the distinct values of a number node, capped at MANY."""
        span = self._integer_span(node)
        if span is not None:
            first, last, step = span
            if max(abs(first), abs(last)) * step >= 10 ** MAX_DIGITS:
                return 0  # past 15 digits only some integers are spelled: not counted
            return max(0, min(last - first + 1, MANY))
        if node.integer or node.mult is not None:
            return MANY  # an unbounded side: more integers than any output
        if node.lo is None or node.hi is None:
            return MANY
        # NOTE: a range at least a millionth as wide as its largest bound holds ~10**8 decimals of 15 digits.
        width, scale = node.hi - node.lo, max(abs(node.lo), abs(node.hi))
        return MANY if scale and width * 10**6 >= scale else (1 if width == 0 else 0)

    def _few_numbers(self, node) -> list | None:
        span = self._integer_span(node)
        if span is not None:
            first, last, step = span
            if last - first + 1 > MAX_ENUMERATED or max(abs(first), abs(last)) * step >= 10 ** MAX_DIGITS:
                return None
            return [k * step for k in range(first, last + 1)]
        if node.lo is not None and node.lo == node.hi and not (node.lo_excl or node.hi_excl):
            return [node.lo]
        return None

    # ---- strings -----------------------------------------------------------------------------------------------

    def _string_open(self, node, s: int, count: int) -> bool:
        key = (node, s, count)
        hit = self._string.get(key)
        if hit is None:
            hit = self._string[key] = self._count_strings(node, s, count) >= MANY
        return hit

    def _char_open(self, node, s: int, count: int, pending) -> bool:
        """Whether a string inside a character (a token may end there) can still end MANY ways: some way to finish the
        character leads to a DFA state that can. Raw UTF-8 and a bare backslash are judged; `\\u` escapes are not."""
        if pending[0] == "u8*":
            targets = [node.dfa.step_symbol(s, node.dfa.else_symbol)]
        elif pending[0] == "u8":
            rng = utf8_prefix_range(pending[1])
            targets = [] if rng is None else node.dfa.next_states_in_range(s, *rng)
        elif pending[0] == "esc":
            targets = [node.dfa.step(s, cp) for cp in _SIMPLE_ESCAPES.values()]
        else:
            return False
        after = count + 1 if node.max_length is not None else min(count + 1, max(node.min_length, 0))
        return any(t is not None and self._string_open(node, t, after) for t in targets)

    def _symbol_sizes(self, dfa) -> dict:
        """symbol -> how many code points (surrogates excluded: no UTF-8 spells them) read as it; a lower bound."""
        hit = self._sizes.get(dfa)
        if hit is None:
            hit = {}
            explicit = [cp for cp in dfa.explicit_code_points if not 0xD800 <= cp <= 0xDFFF]
            for cp in explicit:
                sym = dfa.symbol_of(cp)
                hit[sym] = hit.get(sym, 0) + 1
            if dfa.else_symbol is not None:
                if dfa.ascii_only_else:
                    rest = _PRINTABLE_ASCII - sum(1 for cp in explicit if 0x20 <= cp < 0x7F)
                else:
                    rest = _CODE_POINTS - _SURROGATES - len(explicit)
                hit[dfa.else_symbol] = hit.get(dfa.else_symbol, 0) + max(rest, 0)
            self._sizes[dfa] = hit
        return hit

    def _count_strings(self, node, s: int, count: int) -> int:
        """A lower bound (capped at MANY) of the distinct texts a string can still end with, from DFA state `s` after
        `count` characters: infinite languages by a walk longer than the DFA, the rest counted length by length."""
        lo = max(0, node.min_length - count)
        hi = None if node.max_length is None else node.max_length - count
        if hi is not None and hi < lo:
            return 0
        dfa = node.dfa
        if hi is None and walks_of(dfa).exists(s, lo + dfa.num_states, None):
            return MANY  # a cycle on the way to a final state: a completion of every length past it
        if lo > 4 * _COUNT_STEPS:
            return 0
        rows, sizes, finals = dfa.rows(), self._symbol_sizes(dfa), dfa.finals
        excluded = len(node.exclude) if node.exclude else 0
        vec, total = {s: 1}, 0
        last = lo + _COUNT_STEPS if hi is None else min(hi, lo + _COUNT_STEPS)
        for k in range(last + 1):
            if k >= lo:
                total += sum(c for t, c in vec.items() if t in finals)
                if total - excluded >= MANY:
                    return MANY
            nxt: dict = {}
            for u, c in vec.items():
                for sym, t in rows[u].items():
                    nxt[t] = min(MANY, nxt.get(t, 0) + c * sizes.get(sym, 0))
            vec = {t: c for t, c in nxt.items() if c}
            if not vec:
                break
        return max(0, total - excluded)

    # ---- containers --------------------------------------------------------------------------------------------

    def _array_open(self, node, k: int) -> bool:
        """Whether an array, with item `k` the next one, can still produce MANY distinct values."""
        if node.max_items is not None and k >= node.max_items:
            return False
        if node.items is not None and node.max_items is None and not node.unique:
            return True  # unboundedly many items: arrays of every length
        top = len(node.prefix) + 1 if node.items is not None else len(node.prefix)
        if node.max_items is not None:
            top = min(top, node.max_items)
        return any(self.node_open(node._item(j)) for j in range(k, max(k, top)))

    def _object_open(self, node, members: bool) -> bool:
        """Whether an object can still produce MANY distinct values: free extra keys with no maxProperties, or (from
        its start, `members`) a member whose value can. NOTE: reads only what any object node offers (`extra_first`,
        `first`, `max_props`); a member being read is a Seq frame of its own, judged by itself."""
        if getattr(node, "max_props", 0) is not None:
            return False
        if getattr(node, "extra_first", ()):
            return True  # any number of free keys
        return members and any(self.node_open(m) for m in getattr(node, "first", ()))

    def can_add(self, node: JsonArray, k: int) -> bool:
        """Whether item `k` of a unique array can always be one that differs from the k before it."""
        item = node._item(k) if k < len(node.prefix) or node.items is not None else None
        if item is None or (node.max_items is not None and k >= node.max_items):
            return False
        if self.node_open(item):
            return True
        if node.prefix:
            return False  # the positions' languages differ: how many values are left is not counted here
        count = self.value_count(item)
        return count is not None and k < count

    # ---- frames and states -------------------------------------------------------------------------------------

    def frame_open(self, frame) -> bool:
        """Whether what is left of `frame` (a leaf, or a frame waiting on the stack) can still produce MANY values."""
        node = frame[0]
        if isinstance(node, JsonString):
            if frame[1] is None:
                return self._string_open(node, node.dfa.initial, 0)
            _, s, count, _, pending = frame
            if pending is None:
                return self._string_open(node, s, count)
            return self._char_open(node, s, count, pending)
        if isinstance(node, Seq):
            return any(self.node_open(p) for p in node.parts[frame[1]:])
        if isinstance(node, JsonObject):
            return self._object_open(node, False)
        if isinstance(node, JsonArray) and not node.unique:
            count, phase = frame[1], frame[2]
            return phase in (NEXT, ITEM) and self._array_open(node, count)
        return False

    def config_safe(self, config) -> bool:
        """Whether `config` (leaf frame, continuation) completes whatever the earlier items of its open unique arrays
        are. NOTE: its leaf and stack are read from the innermost frame out; `opened` says whether the innermost
        unique array's current item can still take MANY values (then one of them is new), and every unique array on
        the way must be able to go on from its own position."""
        frame, cont = config
        opened = False
        depth = 0
        while True:
            node = frame[0]
            if isinstance(node, JsonArray) and node.unique:
                count, phase = frame[1], frame[2]
                if phase == POST and depth:  # inside item count - 1: it must still be able to differ
                    if not opened:
                        return False
                else:
                    if phase == ITEM and not self.can_add(node, count):  # between a separator and item `count`
                        return False
                    # the leaf right after an item, or after the opening bracket: the array's own value may vary
                    opened = self._array_open(node, count)
                # NOTE: the items still needed for minItems; past the prefix every position is alike (and unique_limits
                # made sure that one differs), so a check per prefix position covers them.
                for k in range(max(1, count + (phase == ITEM)), min(node.min_items, len(node.prefix) + 1)):
                    if not self.can_add(node, k):
                        return False
            elif not opened:
                opened = self.frame_open(frame)
            if cont is None:
                return True
            frame, cont = cont
            depth += 1

    def safe(self, configs) -> bool:
        return any(self.config_safe(c) for c in configs)


def unique_limits(distinct: DistinctValues, prefix, items, min_items: int, max_items, where: str):
    """(min_items, max_items) of a unique array over these item nodes, or None where no array fits: maxItems capped by
    the number of values a single `items` language has. Raises UnsupportedSchemaError where minItems >= 2 needs more
    distinct items than this module can tell are there (the automaton would offer arrays no request could finish)."""
    prefix, items = possible_positions(prefix, items)  # as JsonArray.build
    if not prefix and items is not None:
        count = distinct.value_count(items)
        if count is not None and count < MANY:
            max_items = count if max_items is None else min(max_items, count)
            if min_items > max_items:
                return None
    if min_items >= 2:
        probe = JsonArray(prefix, items, min_items, max_items, None, None, None, True)
        needed = range(1, min(min_items, len(prefix) + 1)) if prefix else (min_items - 1,)
        if not all(distinct.can_add(probe, k) for k in needed):
            raise UnsupportedSchemaError("uniqueItems", where, f"with minItems {min_items} over items that may not "
                                         "have that many distinct values")
    return min_items, max_items


def check_unique_placement(root, where_of: dict) -> None:
    """Refuse a unique array inside a Combine (`not`, `if`, overlapping `oneOf`, `contains`): a Combine runs its parts
    as sub-automata of its own leaf, where the cursor cannot see their items to check them. `where_of`: id of each
    unique array node -> its JSON pointer (for the message). Walks the graph once, through every public node-valued slot."""
    from .combine import Combine  # combine imports the matcher, which imports this module

    seen: set = set()
    todo = [(root, False)]
    while todo:
        node, inside = todo.pop()
        if (id(node), inside) in seen:
            continue
        seen.add((id(node), inside))
        if inside and isinstance(node, JsonArray) and node.unique:
            raise UnsupportedSchemaError("uniqueItems", where_of.get(id(node), ""),
                                         "inside not / if / oneOf with overlapping branches / contains")
        inner = inside or isinstance(node, Combine)
        for value in _slot_values(node):
            todo.extend((child, inner) for child in _nodes_in(value))


def _slot_values(node):
    for cls in type(node).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name.startswith("_"):
                continue  # memo tables and caches (a Combine's sub-automaton states among them)
            value = getattr(node, name, None)
            if value is not None and not isinstance(value, dict):
                yield value


def _nodes_in(value):
    if isinstance(value, Node):
        yield value
    elif isinstance(value, (tuple, list, frozenset)):
        for v in value:
            yield from _nodes_in(v)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _nodes_in(getattr(value, name))
