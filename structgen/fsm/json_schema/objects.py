"""The JSON object node: named keys (each at most once) and classes of extra keys, with the key-set keywords
(required, dependentRequired, minProperties, maxProperties) enforced exactly on the named keys.

Two orders: "schema" (named keys in the order given, optional ones skipped, extra keys after the last named one) and
"any" (named keys in any order, extras interleaved). dependentSchemas is not here: the compiler splits the schema on
which trigger keys appear (one JsonObject per case).

Frame = (node, phase, index, seen, count, distinct, used), phase START or KEY (between members):
- index: "schema" order: the next named position that may come (n + 1 once an extra key was read); "any": 0.
- seen: bitmask of the named keys read, kept only where needed ("any": all of them, the at-most-once rule; "schema":
  the keys dependentRequired names, since position alone tells the rest).
- count: members read, capped at maxProperties (1 without one: it only tells the first member from the others).
- distinct: members that are surely different keys, capped at minProperties; used: the extra classes that counted
  towards it (0 once the minimum is reached: nothing needs it then).

NOTE: duplicate keys. Named keys come at most once, and an extra key is never a named one; extra keys of one class
may repeat each other (`{"x":1,"x":2}`; a parser keeps one) -- remembering every extra key would give each object its
own states. Such repeats answer to the same rules, so the parsed object stays valid; towards minProperties each
class counts once, and maxProperties counts every member.
"""

from __future__ import annotations

import math

from .nodes import GOTO, NEVER, PUSH, Node, seq

START, KEY = 0, 1


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def dependency_closure(names: list[str], depends: dict) -> list[int]:
    """Per name (index into `names`): the bitmask of every name it makes required, directly or through others
    (itself excluded). Names in `depends` must all be in `names`."""
    index = {name: i for i, name in enumerate(names)}
    direct = [0] * len(names)
    for t, ds in depends.items():
        if t in index:
            for d in ds:
                if d != t:
                    direct[index[t]] |= 1 << index[d]
    closure = list(direct)
    for i in [i for i, m in enumerate(direct) if m]:
        todo, seen = list(_bits(direct[i])), direct[i]
        while todo:
            j = todo.pop()
            more = direct[j] & ~seen
            seen |= more
            todo.extend(_bits(more))
        closure[i] = seen & ~(1 << i)
    return closure


def has_mutual_dependencies(closure: list[int]) -> bool:
    return any(closure[j] >> i & 1 for i, m in enumerate(closure) for j in _bits(m))


class JsonObject(Node):
    __slots__ = ("names", "first", "next", "open", "close", "extra_first", "extra_next", "min_props", "max_props",
                 "any_order", "n", "dep", "triggers", "required", "track", "all", "_cap", "_deps_any")

    def __init__(self, names, first, next_, dep, required, open_, close, extra_first, extra_next, min_props,
                 max_props, any_order):
        self.names, self.first, self.next = tuple(names), tuple(first), tuple(next_)
        self.open, self.close = open_, close
        self.extra_first, self.extra_next = tuple(extra_first), tuple(extra_next)
        self.min_props, self.max_props, self.any_order = min_props, max_props, any_order
        self.n = n = len(self.names)
        self.all = (1 << n) - 1
        self.dep = tuple(dep)
        self.triggers = sum(1 << i for i, m in enumerate(self.dep) if m)
        self.required = required
        dependents = 0
        for m in self.dep:
            dependents |= m
        self.track = self.all if any_order else self.triggers | dependents
        self._cap = max(1, max_props) if max_props is not None else 1
        self._deps_any = bool(self.triggers)

    @classmethod
    def build(cls, props, open_, close, extra=None, min_props=0, max_props=None, *, extras=(), depends=None,
              any_order=False) -> Node:
        """props: [(name, first_key, next_key, value, required)] in schema order (value NEVER: the key cannot come);
        extra / extras: (first_key, next_key, value) per class of extra keys; depends: {name: [names it requires]}
        (dependentRequired; every name among the props)."""
        names = [p[0] for p in props]
        closure = dependency_closure(names, depends or {})
        avail = 0
        for i, (_, first_key, next_key, value, _) in enumerate(props):
            if value is not NEVER and first_key is not NEVER and next_key is not NEVER:
                avail |= 1 << i
        for i in range(len(props)):  # a key that makes an impossible one required cannot come either
            if closure[i] & ~avail:
                avail &= ~(1 << i)
        required = 0
        for i, p in enumerate(props):
            if p[4]:
                required |= (1 << i) | closure[i]
        if required & ~avail:
            return NEVER
        keep = [i for i in range(len(props)) if avail >> i & 1]
        new_pos = {old: new for new, old in enumerate(keep)}

        def remap(mask: int) -> int:
            return sum(1 << new_pos[j] for j in _bits(mask))

        classes = [e for e in ([extra] if extra else []) + list(extras) if NEVER not in e]
        node = cls([names[i] for i in keep],
                   [seq(props[i][1], props[i][3]) for i in keep], [seq(props[i][2], props[i][3]) for i in keep],
                   [remap(closure[i]) for i in keep], remap(required), open_, close,
                   [seq(e[0], e[2]) for e in classes], [seq(e[1], e[2]) for e in classes], min_props, max_props,
                   any_order)
        if max_props is not None and min_props > max_props:
            return NEVER
        if not node._viable(0, 0, 0, 0, 0):
            return NEVER
        return node

    # ------------------------------------------------------------------------------------------- key sets
    def _required_now(self, seen: int) -> int:
        r = self.required
        for t in _bits(seen & self.triggers):
            r |= self.dep[t]
        return r

    def _future(self, index: int) -> int:
        """Named keys that may still come (schema order: from position `index` on)."""
        if self.any_order:
            return self.all
        return self.all & ~((1 << index) - 1) if index <= self.n else 0

    def _readable(self, index: int, seen: int, missing: int) -> int:
        """The optional named keys that can still come: unseen, and (schema order) none of the keys they require
        skipped already. NOTE: those they require further on can come too (they require no more than they do)."""
        f = self._future(index) & ~seen & ~missing
        if not self.any_order and self._deps_any:
            past = (1 << index) - 1
            for k in _bits(f & self.triggers):
                if self.dep[k] & past & ~seen:
                    f &= ~(1 << k)
        return f

    def _unused_classes(self, used: int) -> int:
        return len(self.extra_first) - used.bit_count()

    def _viable(self, index: int, seen: int, count: int, distinct: int, used: int) -> bool:
        """Whether a frame between members can still close. NOTE: exact: the keys that some completion reads form a
        set closed under the dependencies, and such a set can grow one key at a time (dependencies without cycles;
        the compiler refuses cycles together with both count bounds), so counts in between are all reachable."""
        missing = self._required_now(seen) & self._future(index) & ~seen
        m = missing.bit_count()
        if self.max_props is not None and count + m > self.max_props:
            return False
        need = self.min_props - distinct - m
        if need <= 0:
            return True
        if self.max_props is not None and count + m + need > self.max_props:
            return False
        return need <= self._readable(index, seen, missing).bit_count() + self._unused_classes(used)

    def _after_named(self, k: int, index: int, seen: int, count: int, distinct: int, used: int):
        d = min(distinct + 1, self.min_props)
        return (0 if self.any_order else k + 1, (seen | 1 << k) & self.track, min(count + 1, self._cap), d,
                used if d < self.min_props else 0)

    def _after_extra(self, c: int, count: int, distinct: int, used: int):
        if distinct < self.min_props and not used >> c & 1:
            distinct += 1
            used = used | 1 << c if distinct < self.min_props else 0
        return (0 if self.any_order else self.n + 1, min(count + 1, self._cap), distinct, used)

    # ------------------------------------------------------------------------------------------- protocol
    def entry(self):
        return (self, START, 0, 0, 0, 0, 0)

    def epsilon(self, frame):
        _, phase, index, seen, count, distinct, used = frame
        if phase == START:
            return ((PUSH, self.open.entry(), (self, KEY, 0, 0, 0, 0, 0)),)
        acts = []
        missing = self._required_now(seen) & self._future(index) & ~seen
        room = self.max_props is None or count < self.max_props
        if room:
            first = count == 0
            if self.any_order:
                candidates = _bits(self.all & ~seen)
            else:
                candidates = range(index, self.n) if index <= self.n else ()
            for k in candidates:
                # schema order: what k requires before its position must have come (positions skipped now did not)
                blocked = not self.any_order and self.dep[k] & ((1 << k) - 1) & ~seen
                if not blocked:
                    nxt = self._after_named(k, index, seen, count, distinct, used)
                    if self._viable(*nxt):
                        member = self.first[k] if first else self.next[k]
                        acts.append((PUSH, member.entry(), (self, KEY) + nxt))
                if not self.any_order and missing >> k & 1:
                    break  # a required key cannot be skipped
            if self.any_order or not missing:
                for c in range(len(self.extra_first)):
                    i2, c2, d2, u2 = self._after_extra(c, count, distinct, used)
                    if self._viable(i2, seen, c2, d2, u2):
                        member = self.extra_first[c] if first else self.extra_next[c]
                        acts.append((PUSH, member.entry(), (self, KEY, i2, seen, c2, d2, u2)))
        if not missing and distinct >= self.min_props:
            acts.append((GOTO, self.close.entry()))
        return tuple(acts)

    # ------------------------------------------------------------------------------------------ exit cost
    def exit_bytes(self, frame, child_exit) -> float | None:
        """The fewest bytes until this frame pops, in closed form between members (None elsewhere, and where the
        cheapest way to make up minProperties would have to weigh keys that bring others along: the matcher
        searches then).

        NOTE: the shortest way out reads every key still required, the cheapest other members that minProperties
        still needs (a named key each, or one extra key per class not counted yet), and closes: a sort, where the
        frame-by-frame search walked every choice of keys (an object of 5000 optional properties held decoding for
        90 s). The first member's key lacks the comma: every member saves the same bytes there (one comma), else
        the search decides."""
        _, phase, index, seen, count, distinct, used = frame
        if phase != KEY:
            return None
        missing = self._required_now(seen) & self._future(index) & ~seen
        m = missing.bit_count()
        need = max(0, self.min_props - distinct - m)
        if self.max_props is not None and count + m + need > self.max_props:
            return math.inf
        saved = set()
        total = child_exit(self.close.entry())
        for k in _bits(missing):
            nxt = child_exit(self.next[k].entry())
            saved.add(nxt - child_exit(self.first[k].entry()))
            total += nxt
        if need:
            readable = self._readable(index, seen, missing)
            if self._deps_any and any(self.dep[k] & ~seen & ~missing for k in _bits(readable & self.triggers)):
                return None
            options = []
            for k in _bits(readable):
                nxt = child_exit(self.next[k].entry())
                saved.add(nxt - child_exit(self.first[k].entry()))
                options.append(nxt)
            for c in range(len(self.extra_first)):
                if not used >> c & 1:
                    nxt = child_exit(self.extra_next[c].entry())
                    saved.add(nxt - child_exit(self.extra_first[c].entry()))
                    options.append(nxt)
            if need > len(options):
                return math.inf
            options.sort()
            total += sum(options[:need])
        if len(saved) > 1:
            return None
        if (m or need) and not count:
            total -= saved.pop()
        return total
