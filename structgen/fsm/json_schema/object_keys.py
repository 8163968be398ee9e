"""Which rules an object key's value answers to, and the automata of the keys that share them.

A key of an object schema is *named* when the schema names it (`properties`, `required`, `dependentRequired`, a
`propertyNames` enum): its rules are found with Python's `re`, as jsonschema finds them, so they are exact. Every
other key is an *extra*: its rules depend on the set of `patternProperties` regexes it matches (its *label*), read
off one product automaton of those regexes (`KeyProduct`); the keys of one *class* (labels with the same rules)
are one JSON string leaf.

Rules come per *layer*: one (properties, patternProperties, additionalProperties) triple for each schema that an
`allOf` merged (normalize.merge keeps them apart once a pattern is involved, as the spec applies each schema's
additionalProperties to what *that* schema does not name). A key answers to every layer: in a layer, its
`properties` entry and every pattern it matches, or else that layer's additionalProperties.

NOTE: a label read off the product is exact only where the pattern automata are: they never accept a string
Python's `re.search` rejects, but may reject some it accepts (where ECMA-262 and Python read a class, `.` or a flag
differently, the dialect takes what both accept). Where a class must know that a pattern does *not* match (its rules
differ from those of a larger label), its keys are restricted to `safe_key_chars` (printable ASCII, and non-ASCII
characters the patterns spell out when nothing in them could read such characters otherwise), on which the pattern
automata and `re` agree. In condition mode (compiler.Compiler.condition) such patterns must be exact everywhere
(`exact_pattern`) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from ...errors import InvalidRegexError
from .. import regex_dfa
from ..regex import CharDFA, parse_char_fsm
from .normalize import _is_annotation

MISSING = object()  # a layer without an explicit additionalProperties
# Patterns one object's extra keys may be classified by: the exactness check visits every label (2**k).
MAX_KEY_PATTERNS = 12
_PRINTABLE_ASCII = frozenset(chr(c) for c in range(0x20, 0x7F))
# Constructs on which interegular's reading and Python's `re` part ways outside printable ASCII.
_UNICODE_SENSITIVE = re.compile(r"\\[dDwWsSbBpP]|\(\?")


@dataclass(frozen=True, eq=False)
class Layer:
    properties: dict
    patterns: dict  # regex -> schema
    additional: object  # a schema, or MISSING

    @property
    def declares(self) -> bool:
        return bool(self.properties) or bool(self.patterns)


@dataclass(frozen=True)
class KeyNames:
    """What `propertyNames` lets through. `allows(name)`: a named key may come (jsonschema decides: exact);
    `enum`: when propertyNames is an enum, the names it lists (they become named keys, and there are no extras);
    `extras`: whether any other key may come, then the decoded key matches every `searched` pattern (re.search), every
    `full` regex (a format) and min_length <= length <= max_length."""

    allows: Callable[[str], bool] = field(default=lambda name: True)
    enum: tuple = ()
    extras: bool = True
    searched: tuple = ()
    full: tuple = ()
    min_length: int = 0
    max_length: int | None = None


def layers_of(s: dict) -> list[Layer]:
    """The key layers of a prepared, flat object schema: its own keywords, then those normalize.merge kept apart."""
    out = []
    own = [k for k in ("properties", "patternProperties", "additionalProperties") if k in s]
    raw = ([{k: s[k] for k in own}] if own else []) + list(s.get("__layers", ()))
    for d in raw:
        out.append(Layer(d.get("properties", {}), d.get("patternProperties", {}), d.get("additionalProperties", MISSING)))
    return out


def is_true_schema(x) -> bool:
    """A schema every value satisfies, read off its keywords alone (True, {}, annotations only)."""
    return x is True or (isinstance(x, dict) and all(_is_annotation(k) for k in x))


def _searches(rx: str, name: str) -> bool:
    return re.search(rx, name) is not None


def named_rules(name: str, layers: list[Layer], closed: bool):
    """The rules of named key `name`: a tuple of (layer, kind, key) with kind "properties" / "patternProperties" /
    "additionalProperties" (schemas every value satisfies left out), or None when the key cannot appear. `closed`:
    strict mode shuts keys that no layer names or matches. Raises re.error for a bad pattern."""
    rules = []
    named = False
    for li, layer in enumerate(layers):
        hits = []
        if name in layer.properties:
            hits.append((li, "properties", name))
        for rx in layer.patterns:
            if _searches(rx, name):
                hits.append((li, "patternProperties", rx))
        if hits:
            named = True
        elif layer.additional is not MISSING:
            hits.append((li, "additionalProperties", None))
        rules.extend(hits)
    if closed and not named:
        return None
    return _kept(rules, layers)


def extra_rules(label: frozenset, layers: list[Layer], closed: bool):
    """The rules of an extra key that matches exactly the patterns in `label` (None: such keys cannot appear)."""
    rules = []
    for li, layer in enumerate(layers):
        hits = [(li, "patternProperties", rx) for rx in layer.patterns if rx in label]
        if not hits and layer.additional is not MISSING:
            hits.append((li, "additionalProperties", None))
        rules.extend(hits)
    if closed and not label:
        return None
    return _kept(rules, layers)


def _kept(rules: list, layers: list[Layer]):
    out = []
    for r in rules:
        sub = rule_schema(r, layers)
        if sub is False:
            return None
        if not is_true_schema(sub):
            out.append(r)
    return tuple(out)


def rule_schema(rule: tuple, layers: list[Layer]):
    li, kind, key = rule
    layer = layers[li]
    if kind == "properties":
        return layer.properties[key]
    if kind == "patternProperties":
        return layer.patterns[key]
    return layer.additional


def needs_exact_labels(patterns: list[str], rules_of) -> bool:
    """Whether some class of extra keys depends on a pattern *not* matching: some label with rules (not None) whose
    rules change when one more pattern matches. Past MAX_KEY_PATTERNS this is assumed."""
    k = len(patterns)
    if k > MAX_KEY_PATTERNS:
        return True
    memo = {}

    def rules(mask: int):
        hit = memo.get(mask, memo)
        if hit is memo:
            hit = memo[mask] = rules_of(frozenset(patterns[i] for i in range(k) if mask >> i & 1))
        return hit

    for mask in range(1 << k):
        r = rules(mask)
        if r is None:
            continue
        for i in range(k):
            if not mask >> i & 1 and rules(mask | 1 << i) != r:
                return True
    return False


def _unescaped(p: str, chars: str) -> list[int]:
    """Positions of the characters in `chars` that stand for themselves as syntax (not escaped, not in a class)."""
    out, in_class, i = [], False, 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if p[i + 1:i + 2] == "^":
                i += 1
            if p[i + 1:i + 2] == "]":  # a ']' first in a class is a literal
                i += 1
        elif c in chars:
            out.append(i)
        i += 1
    return out


def search_form(p: str) -> str:
    """`p` as parse_char_fsm should read it to match what `re.search(p, ...)` matches: a final `$` as Python reads
    it (the end of the text, or before a newline that ends it; the dialect's `$` is the end alone)."""
    if _unescaped(p, "$")[-1:] == [len(p) - 1]:
        return p[:-1] + r"\n?$"
    return p


def exact_pattern(p: str) -> bool:
    """Whether parse_char_fsm(search_form(p)) matches exactly what `re.search(p, ...)` does on every text: no class,
    flag or `.` whose meaning on non-ASCII or control characters differs between the dialect and Python's `re`, and
    no `$` but a final one outside alternatives."""
    if _UNICODE_SENSITIVE.search(p) or _unescaped(p, "."):
        return False
    dollars = _unescaped(p, "$")
    return not dollars or (dollars == [len(p) - 1] and not _unescaped(p, "|"))


def safe_key_chars(patterns: list[str]) -> frozenset:
    """Characters on which every pattern automaton agrees with Python's `re` (see the module NOTE): printable ASCII,
    and the non-ASCII characters the patterns spell out when none has a class, flag or `.` that could read them
    otherwise."""
    if any(_UNICODE_SENSITIVE.search(p) or _unescaped(p, ".") or "[^" in p for p in patterns):
        return _PRINTABLE_ASCII
    return _PRINTABLE_ASCII | frozenset(c for p in patterns for c in p if ord(c) > 0x7F)


def _alphabet_fsm(chars: frozenset) -> regex_dfa.CharFSM:
    """Strings of `chars` only."""
    return regex_dfa.CharFSM({c: 1 for c in chars}, 0, 2, 0, frozenset({0}), ({1: 0},))


class KeyProduct:
    """The product of the key pattern automata. Components come in groups, a group matching when one of its
    components does: groups 0..k-1 are the *observed* patterns (each may match or not: a label bit each), the rest are
    *required* (`propertyNames` patterns and format, the safe alphabet: every key matches them). States are tuples of
    component states (None: that component can no longer match; a state where some required group cannot is not
    built); `labels[i]` = the label of product state i where every required group matches, else None. Immutable
    once built (`dfa` memoizes a pure function)."""

    def __init__(self, comps: list, groups: list[int], observed: int, ascii_only: bool, budget: regex_dfa.Budget):
        pair_symbol: dict[tuple, int] = {tuple(f.else_symbol for f in comps): 0}
        symbol_of = {}
        for c in set().union(*(f.symbol_of for f in comps)) if comps else ():
            key = tuple(f.symbol_of.get(c, f.else_symbol) for f in comps)
            sym = pair_symbol.get(key)
            if sym is None:
                sym = pair_symbol[key] = len(pair_symbol)
            symbol_of[c] = sym
        budget.spend(len(symbol_of))
        members: dict[int, list[int]] = {}
        for j, g in enumerate(groups):
            members.setdefault(g, []).append(j)
        required = [js for g, js in members.items() if g >= observed]

        def lives(st) -> bool:
            return all(any(st[j] is not None for j in js) for js in required)

        pairs = list(pair_symbol.items())
        start = tuple(f.initial for f in comps)
        ids = {start: 0}
        order = [start]
        rows, labels = [], []
        i = 0
        while i < len(order):
            st = order[i]
            final = [st[j] is not None and st[j] in f.finals for j, f in enumerate(comps)]
            if all(any(final[j] for j in js) for js in required):
                labels.append(sum(1 << g for j, g in enumerate(groups) if g < observed and final[j]))
            else:
                labels.append(None)
            row = {}
            for syms, sym in pairs:
                nxt = tuple(None if st[j] is None else f.map[st[j]].get(syms[j]) for j, f in enumerate(comps))
                if not lives(nxt):
                    continue
                row[sym] = regex_dfa.intern_state(ids, order, nxt, budget)
            budget.spend(len(pairs) * max(1, len(comps)))
            rows.append(row)
            i += 1
        self.symbol_of = symbol_of
        self.num_symbols = len(pair_symbol)
        self.rows = tuple(rows)
        self.labels = tuple(labels)
        self.ascii_only = ascii_only
        self._dfas: dict = {}

    def reachable_labels(self) -> set:
        return {lab for lab in self.labels if lab is not None}

    def dfa(self, labels: frozenset) -> CharDFA:
        """The keys whose label (a bitmask over the observed patterns) is in `labels`."""
        hit = self._dfas.get(labels)
        if hit is None:
            finals = {i for i, lab in enumerate(self.labels) if lab in labels}
            # NOTE: regex_dfa's minimization (private there; no public one yet) under a budget of its own per class.
            fsm = regex_dfa._minimize([dict(r) for r in self.rows], finals, self.symbol_of, 0, self.num_symbols,
                                      regex_dfa.Budget("the keys of one class of an object's extra keys"))
            hit = self._dfas[labels] = CharDFA.from_fsm(fsm, self.ascii_only)
        return hit


@lru_cache(maxsize=256)
def key_product(observed: tuple[str, ...], searched: tuple[str, ...], full: tuple[str, ...], exact: bool) -> KeyProduct:
    """The KeyProduct of the `observed` patterns, with every key also matching the `searched` patterns and the
    `full` regexes (full match), restricted to the safe characters when `exact`. Patterns read as `re.search` does
    (search_form).

    NOTE: cached across schemas like compiler._string_dfa (the same `^x-` patterns recur); InvalidRegexError and
    ConstraintTooComplexError are raised again on each try (not cached); every step is bounded by regex_dfa's work
    limits."""
    comps, groups, ascii_only = [], [], False
    for g, p in enumerate(observed + searched):
        form = search_form(p)
        try:
            f, a = parse_char_fsm(form, search=True)
        except InvalidRegexError as e:  # named by the schema's own pattern, not the rewritten form
            detail = str(e).split(": ", 1)[-1].rsplit(" (pattern", 1)[0]
            raise InvalidRegexError(p, e.position if form == p else None, detail) from None
        comps.append(f)
        groups.append(g)
        ascii_only |= a
    g = len(observed) + len(searched)
    for p in full:
        comps.append(parse_char_fsm(p)[0])
        groups.append(g)
        g += 1
    if exact:
        comps.append(_alphabet_fsm(safe_key_chars(list(observed))))
        groups.append(g)
    budget = regex_dfa.Budget("the product of an object's key patterns")
    return KeyProduct(comps, groups, len(observed), ascii_only, budget)
