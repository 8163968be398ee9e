"""Prepared schema dicts -> the node graph (nodes.py and the leaves in strings / numbers / objects / arrays).

Recursion through `$ref` is unrolled: each ref target may be entered at most `max_recursion_depth` times
on one path; past that the branch is unsatisfiable (NEVER) and pruned, so output stays valid and finite.
Compiled ref targets are memoized by (target, the visit counts of the targets it can reach), so schemas
that share definitions without recursion compile each definition once.
"""

from __future__ import annotations

import json
import math
import re
import time
from fractions import Fraction
from functools import lru_cache

import jsonschema

from ...errors import ConstraintTooComplexError, InvalidRegexError, InvalidSchemaError, UnsupportedSchemaError
from .. import regex_dfa
from ..regex import CharDFA, parse_char_fsm
from .arrays import JsonArray, possible_positions
from .combine import Combine, Term, integer_by_value, max_nesting, strings_dfa
from .contains import JsonContainsArray
from .discriminated import discriminated_cases
from .distinct import DistinctValues, unique_limits
from .formats import CHECKED_FORMATS, format_regex
from .lengths import LENGTH_HORIZON
from .nodes import NEVER, Done, Node, Whitespace, alt, literal, seq
from .normalize import TYPES, SchemaDocument, _is_annotation, _number, merge, pointer_str, prepare, value_key
from .numbers import JsonNumber, multiple_of
from .object_keys import (MAX_KEY_PATTERNS, MISSING, KeyNames, exact_pattern, extra_rules, key_product, layers_of,
                          named_rules, needs_exact_labels, rule_schema)
from .objects import JsonObject, dependency_closure, has_mutual_dependencies
from .strings import JsonString

MAX_ENUM_VALUES = 10_000
# Schema nodes one compile may build while unrolling recursion. Measured over the 3,524 jsonschemabench dev schemas
# (2026-12-07): the largest that compiles builds 26,854; every schema past ~27k is exponential unrolling of mutually
# recursive definitions that never finishes (14 WashingtonPost/Handwritten schemas, each ~9 s to reach 100k). 50k
# keeps twice the largest real need and refuses those in about half the time.
MAX_NODES = 50_000
MAX_FLATTEN_DEPTH = 64
MAX_DEPENDENT_SCHEMAS = 4  # trigger keys with schemas on one object: one object node per choice of them (2**k)
MAX_ONE_OF_OVERLAP = 16  # oneOf branches that may overlap, run side by side in one Combine
# Settings of a condition compiler besides condition mode (set where the compiler has them).
_CONDITION_OPTIONS = {"property_order": "any"}
# Pattern parts whose meaning on non-ASCII text our dialect does not share with Python's `re` (shorthand classes,
# word boundaries, case-insensitive flags): fine for what we write, not for a test that must reject exactly.
_UNICODE_SENSITIVE = re.compile(r"\\[dwsDWSbB]|\(\?[a-zA-Z]*i")

# Assertion keywords we do not enforce, and the instance type they constrain (None = every type).
UNSUPPORTED = {
    "$dynamicRef": None, "$recursiveRef": None,
    "unevaluatedProperties": "object",
    "unevaluatedItems": "array",
}
# Keywords compiled through a Combine of sub-automata, some of them tests in *condition* mode (see combine.py).
CONDITION_KEYWORDS = frozenset({"not", "if", "oneOf", "contains"})
_TYPE_KEYWORDS = {
    "object": ("properties", "required", "additionalProperties", "minProperties", "maxProperties",
               "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "__layers"),
    "array": ("items", "prefixItems", "minItems", "maxItems"),
    "string": ("pattern", "minLength", "maxLength", "format", "__patterns"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}


@lru_cache(maxsize=1024)
def _string_dfa(patterns: tuple[str, ...], format_rx: str | None) -> CharDFA:
    """The char DFA of a string's patterns (search semantics) and format regex (full match), intersected.

    NOTE: cached across schemas: parsing a format or pattern and trimming its DFA costs ~1-30 ms, and schemas repeat
    the same ones (date-time, email, uuid) many times. A CharDFA is immutable apart from memo tables of pure
    functions, so sharing it between constraints is safe. Each step is bounded by structgen.fsm.regex_dfa's work
    limits (ConstraintTooComplexError, never cached: raised again on each try)."""
    fsms, ascii_only = [], False
    for p in patterns:
        fsm, a = parse_char_fsm(p, search=True)  # InvalidRegexError: not cached, raised again on each try
        fsms.append(fsm)
        ascii_only |= a
    if format_rx is not None:
        fsms.append(parse_char_fsm(format_rx)[0])
    fsm = fsms[0]
    for other in fsms[1:]:
        fsm = regex_dfa.intersect(fsm, other, regex_dfa.Budget("the intersection of a string's pattern and format"))
    return CharDFA.from_fsm(fsm, ascii_only)


class Compiler:
    def __init__(self, root, *, extra_properties: bool, whitespace: str, max_recursion_depth: int,
                 compile_timeout_s: float = 30.0, property_order: str = "schema"):
        if whitespace not in ("compact", "flexible"):
            raise ValueError(f"whitespace must be 'compact' or 'flexible', not {whitespace!r}")
        if property_order not in ("schema", "any"):
            raise ValueError(f"property_order must be 'schema' or 'any', not {property_order!r}")
        self.property_order = property_order
        if not isinstance(max_recursion_depth, int) or max_recursion_depth < 0:
            raise ValueError("max_recursion_depth must be a non-negative int")
        self.doc = SchemaDocument(root)
        self.strict = not extra_properties
        self.max_depth = max_recursion_depth
        self.any_depth = max_recursion_depth + 2
        self.flexible = whitespace == "flexible"
        self._ws = Whitespace(2, 20) if self.flexible else None
        self._memo: dict = {}
        self._any: dict[int, Node] = {}
        self._nodes = 0
        self._validator = None
        self._plain_string = None
        self._keys: dict = {}
        self._deadline = time.monotonic() + compile_timeout_s
        self._compile_timeout_s = compile_timeout_s
        # condition: this compiler builds tests (the `not` of a `not`, an `if`, oneOf branches against each other,
        # `contains`): they must accept every text a carrier writes that JSON Schema says matches (combine.py).
        self.condition = False
        # NOTE: a condition's number nodes read no exponents (bounded numbers never do), so wherever a condition may
        # judge a number the carrier writes none either: one flag per schema, set from its text.
        self.exponents = not _uses_keywords(root, CONDITION_KEYWORDS)
        self._conditions: dict = {}
        self.unique_arrays: dict = {}  # id of each unique array node built -> its pointer (checked at run time)

    # --------------------------------------------------------------------------------- entry points
    def compile(self) -> Node:
        # NOTE: counts[target] = times the target is already on the current path; the root is on it from the start.
        if self.exponents is False:  # the schema has conditions: refuse what no test can judge before any work
            self._refuse_untestable()
        node = self.schema(self.doc.root, (), {(): 1})
        if node is NEVER:
            raise InvalidSchemaError("the schema admits no value that can be generated")
        return node

    def _refuse_untestable(self) -> None:
        """Refuse up front what _check_condition would refuse inside a `not`, an `if` (with a then or else) or a
        `contains`: otherwise the tests compiled before it (witness searches included) are paid for first. NOTE: only
        subtrees that are always tests; overlapping oneOf branches are found during the compile."""
        seen = set()
        todo = [(self.doc.root, (), False)]
        while todo:
            s, at, inside = todo.pop()
            if not isinstance(s, dict) or (id(s), inside) in seen:
                continue
            seen.add((id(s), inside))
            if len(seen) % 256 == 0:
                self._check_deadline()
            where = pointer_str(at)
            if inside:
                p, fmt = s.get("pattern"), s.get("format")
                if isinstance(p, str) and _UNICODE_SENSITIVE.search(p):
                    raise UnsupportedSchemaError("pattern", where, f"{p!r} inside not / if / oneOf / contains: its "
                                                 "classes or case folding read non-ASCII text unlike Python's re")
                if isinstance(fmt, str) and fmt in CHECKED_FORMATS and s.get("type", "string") in ("string",
                                                                                                   ["string"]):
                    raise UnsupportedSchemaError("format", where, f"format {fmt!r} inside not / if / oneOf / contains")
            if isinstance(s.get("$ref"), str):
                try:
                    target = self.doc.resolve(s["$ref"], at)
                    todo.append((self.doc.get(target), target, inside))
                except (InvalidSchemaError, UnsupportedSchemaError):
                    pass  # refused where the compile meets it, with its own message
            for k, v in s.items():
                if k in ("enum", "const", "$ref", "examples", "default") or _is_annotation(k):
                    continue
                if k in ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions"):
                    if isinstance(v, dict):  # maps of names to schemas: the names are not keywords
                        # NOTE: definitions are tests only where a $ref from inside one reaches them
                        keep = inside and k not in ("$defs", "definitions")
                        todo.extend((x, at + (k, n), keep) for n, x in v.items() if isinstance(x, dict))
                    continue
                test = inside or k == "not" or (k == "if" and ("then" in s or "else" in s)) or \
                    (k == "contains" and not (s.get("minContains") == 0 and "maxContains" not in s))
                if isinstance(v, dict):
                    todo.append((v, at + (k,), test))
                elif isinstance(v, list):
                    todo.extend((x, at + (k, i), test) for i, x in enumerate(v) if isinstance(x, dict))

    def schema(self, s, at: tuple, counts: dict) -> Node:
        """Node for the subschema `s` found at pointer tokens `at`."""
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise ConstraintTooComplexError("schema nodes (after unrolling recursion)", MAX_NODES)
        if self._nodes % 64 == 0:
            self._check_deadline()
        if s is True:
            return self.any_value(self.any_depth)
        if s is False:
            return NEVER
        if not isinstance(s, dict):
            raise InvalidSchemaError("a schema must be an object or a boolean", pointer_str(at))
        if "$ref" in s and all(k == "$ref" or k in _REF_ONLY_OK for k in s):
            return self.ref(self.doc.resolve(s["$ref"], at), counts)
        flat, counts = self.flatten(s, at, counts, 0)
        if flat is False:
            return NEVER
        return self.flat(flat, at, counts)

    def ref(self, target: tuple, counts: dict) -> Node:
        reach = self.doc.reach(target)
        key = (target, tuple(sorted(((t, c) for t, c in counts.items() if t in reach), key=repr)))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        c = counts.get(target, 0)
        if c > self.max_depth:  # c re-entries already: the recursive branch is not offered
            return NEVER
        node = self.schema(self.doc.get(target), target, {**counts, target: c + 1})
        self._memo[key] = node
        return node

    # ------------------------------------------------------------------------------ flattening
    def flatten(self, s, at: tuple, counts: dict, depth: int):
        """(one prepared dict without $ref / allOf, or False; visit counts after inlining refs)."""
        if depth > MAX_FLATTEN_DEPTH:
            raise ConstraintTooComplexError(f"nested $ref/allOf at {pointer_str(at)}", MAX_FLATTEN_DEPTH)
        if s is True:
            return {"__src": []}, counts
        if s is False:
            return False, counts
        if not isinstance(s, dict):
            raise InvalidSchemaError("a schema must be an object or a boolean", pointer_str(at))
        where = pointer_str(at)
        s = prepare(s, where)
        if "$ref" in s:
            target = self.doc.resolve(s.pop("$ref"), at)
            c = counts.get(target, 0)
            if c > self.max_depth:
                return False, counts
            t, counts = self.flatten(self.doc.get(target), target, {**counts, target: c + 1}, depth + 1)
            if t is False:
                return False, counts
            s = merge(t, s, where)
        if "allOf" in s:
            branches = s.pop("allOf")
            if not isinstance(branches, list) or not branches:
                raise InvalidSchemaError("'allOf' must be a non-empty array", where)
            for i, b in enumerate(branches):
                bd, counts = self.flatten(b, at + ("allOf", i), counts, depth + 1)
                if bd is False:
                    return False, counts
                s = merge(s, bd, where)
        return s, counts

    # ------------------------------------------------------------------------------- flat schemas
    def flat(self, s: dict, at: tuple, counts: dict) -> Node:
        where = pointer_str(at)
        s = _next_deferred(s, where)
        if "anyOf" in s or "oneOf" in s:
            key = "anyOf" if "anyOf" in s else "oneOf"
            branches = s[key]
            if not isinstance(branches, list) or not branches:
                raise InvalidSchemaError(f"'{key}' must be a non-empty array", where)
            rest = {k: v for k, v in s.items() if k != key}
            if key == "anyOf" and _is_pure_ref_branches(rest, branches):
                # NOTE: nothing to merge into the branches, so each is its ref target as is: compile it through
                # ref()'s memo (a recursive anyOf of refs otherwise recompiles the target at every use).
                return alt(self.schema(b, at + (key, i), counts) for i, b in enumerate(branches))
            merged = []
            for i, b in enumerate(branches):
                bd, bcounts = self.flatten(b, at + (key, i), counts, 0)
                if bd is False:
                    continue
                merged.append((merge(rest, bd, where), bcounts, at + (key, i)))
            if key == "oneOf":
                return self._one_of(merged, where)
            return alt(self.flat(m, a, c) for m, c, a in merged)
        if "enum" in s:
            return self.enum(s, where)  # NOTE: enum values are checked with jsonschema: `not` and `if` included
        if "if" in s:
            return self._if_then_else(s, at, counts)
        s, tests = self._apply_nots(s, where)
        if s is False:
            return NEVER
        types = self.types_of(s)
        self._check_unsupported(s, types, where)
        if self.condition:
            self._check_condition(s, types, where)
        branches = []
        for t in types:
            if t == "null":
                branches.append(literal("null"))
            elif t == "boolean":
                branches.append(literal("true", "false"))
            elif t == "integer":
                if "number" not in types:
                    branches.append(self._integer(s, where))
            elif t == "number":
                branches.append(self._numbers(self.number(s, False, where)))
            elif t == "string":
                branches.append(self.string(s, where))
            elif t == "array":
                branches.append(self.array(s, at, counts))
            elif t == "object":
                branches.append(self.object(s, at, counts))
        node = alt(branches)
        if tests and node is not NEVER:
            cond = self._condition_for(node)
            negated = [cond.schema(n, at + ("not",), counts) for n in tests]
            negated = [n for n in negated if n is not NEVER]  # `not` of a schema nothing matches: no test
            if negated:
                node = Combine.build([node, *negated], [Term(final=frozenset({0}),
                                                             not_final=frozenset(range(1, len(negated) + 1)))],
                                     f"'not' at {where}")
        return node

    # ------------------------------------------------------------------------- combinations
    def _condition_for(self, carrier: Node) -> "Compiler":
        """The compiler of tests that judge texts `carrier` writes: condition mode, spec semantics, depth limits at
        least the carrier's nesting (a test cut shallower would misjudge a deep value). One per depth, shared."""
        depth = max_nesting(carrier)
        hit = self._conditions.get(depth)
        if hit is None:
            hit = Compiler.__new__(Compiler)
            hit.__dict__.update(self.__dict__)
            hit.strict = False
            hit.condition = True
            hit.max_depth = max(self.max_depth, depth)
            hit.any_depth = max(self.any_depth, depth + 1)
            hit._memo, hit._any, hit._keys, hit._conditions = {}, {}, {}, hit._conditions
            for k, v in _CONDITION_OPTIONS.items():
                if hasattr(hit, k):
                    setattr(hit, k, v)
            self._conditions[depth] = hit
        return hit

    def _one_of(self, merged: list, where: str) -> Node:
        """Exactly one branch: branches provably disjoint from every other are plain alternatives; the rest run side
        by side in one Combine (final iff exactly one of their tests accepts)."""
        merged = self._one_of_types(merged, where)
        if not merged:
            return NEVER
        dicts = [m for m, _, _ in merged]
        overlapping = [i for i in range(len(dicts))
                       if any(j != i and not self._disjoint(dicts[i], dicts[j]) for j in range(len(dicts)))]
        free = [self.flat(m, a, c) for i, (m, c, a) in enumerate(merged) if i not in overlapping]
        if not overlapping:
            return alt(free)
        if len(overlapping) > MAX_ONE_OF_OVERLAP:
            raise UnsupportedSchemaError("oneOf", where, f"more than {MAX_ONE_OF_OVERLAP} branches that may overlap")
        if sum(1 for i in overlapping if _asserts_nothing({k: v for k, v in dicts[i].items() if k != "__src"})) > 1:
            return alt(free)  # two branches that match everything: none of the overlapping ones can be the one
        group = [merged[i] for i in overlapping]
        gens = [self.flat(m, a, c) for m, c, a in group]
        cond = self._condition_for(alt(gens))
        tests = [cond.flat(m, a, c) for m, c, a in group]
        n = len(group)
        terms = [Term(final=frozenset({n + i}), not_final=frozenset(n + j for j in range(n) if j != i),
                      some=frozenset(range(n))) for i in range(n)]
        # NOTE: a branch's generator writes only values of that branch, which its test accepts: gen i implies test i
        return alt(free + [Combine.build(gens + tests, terms, f"'oneOf' at {where}",
                                         implies=tuple((i, n + i) for i in range(n)))])

    def _one_of_types(self, merged: list, where: str) -> list:
        """The branches restricted to the JSON types where fewer than two of them match every value. NOTE: a type that
        two branches say nothing about (`{"required": ["a"]}` next to `{"required": ["b"]}`: every string matches
        both) has no valid value; cutting it here keeps the Combine's searches to the types that can have one."""
        kinds = ("null", "boolean", "number", "string", "array", "object")
        trivial = {t: 0 for t in kinds}
        for m, _, _ in merged:
            for t in kinds:
                if _matches_every(m, t):
                    trivial[t] += 1
        dead = {t for t in kinds if trivial[t] >= 2}
        if not dead:
            return merged
        allowed = [t for t in TYPES if (t if t != "integer" else "number") not in dead]
        if not allowed:
            return []
        out = []
        for m, c, a in merged:
            r = merge(m, {"type": allowed}, where)
            if r is not False:
                out.append((r, c, a))
        return out

    def _if_then_else(self, s: dict, at: tuple, counts: dict) -> Node:
        """(if and then) or (not if and else): each of then / else merged with the rest of the schema, `if` a test."""
        where = pointer_str(at)
        if s.get("__conds"):
            cases = discriminated_cases([{k: s[k] for k in ("if", "then", "else") if k in s}] + list(s["__conds"]))
            if cases is not None:
                return self._case_split(s, cases, at, counts)
            if len(s["__conds"]) >= MAX_SPLIT_CONDITIONS:
                # NOTE: one condition after another doubles the cases each time (then / else of each)
                raise ConstraintTooComplexError(f"'if' conditions combined by allOf at {where} (other than tests of "
                                                "one key against constants)", MAX_SPLIT_CONDITIONS)
        rest = {k: v for k, v in s.items() if k not in ("if", "then", "else")}
        if "then" not in s and "else" not in s:
            return self.flat(rest, at, counts)  # an `if` alone asserts nothing
        cases = []
        for key in ("then", "else"):
            sub, sub_counts = self.flatten(s.get(key, True), at + (key,), counts, 0)
            cases.append(NEVER if sub is False else self.flat(merge(rest, sub, where), at, sub_counts))
        then_, else_ = cases
        if then_ is NEVER and else_ is NEVER:
            return NEVER
        test = self._condition_for(alt(cases)).schema(s["if"], at + ("if",), counts)
        if test is NEVER:
            return else_
        return Combine.build([then_, else_, test], [Term(final=frozenset({0, 2})),
                                                    Term(final=frozenset({1}), not_final=frozenset({2}))],
                             f"'if' at {where}")

    def _case_split(self, s: dict, cases: list[list], at: tuple, counts: dict) -> Node:
        """The alternatives of a discriminated case split (discriminated.py), each merged with the rest of `s`."""
        where = pointer_str(at)
        rest = {k: v for k, v in s.items() if k not in ("if", "then", "else", "__conds")}
        branches = []
        for case in cases:
            merged, case_counts = rest, counts
            for i, sub in enumerate(case):
                f, case_counts = self.flatten(sub, at + ("allOf", i), case_counts, 0)
                if f is False:
                    merged = False
                    break
                merged = merge(merged, f, where)
            if merged is not False:
                branches.append(self.flat(merged, at, case_counts))
        return alt(branches)

    def _integer(self, s: dict, where: str) -> Node:
        """An integer. NOTE: in condition mode JSON Schema's meaning (1.0 is an integer): a number that is a multiple
        of 1 (and of any multipleOf), read by value, so a carrier's `1.0` is judged right."""
        if not self.condition:
            return self.number(s, True, where)
        if "multipleOf" in s:
            m = _number(s["multipleOf"], "multipleOf", where)
            if m <= 0:
                raise InvalidSchemaError("'multipleOf' must be > 0", where)
            s = {**s, "multipleOf": math.lcm(m.numerator, m.denominator) // m.denominator}  # lcm(m, 1)
        return integer_by_value(self.number(s, True, where), Done())

    def _numbers(self, node: Node) -> Node:
        if not self.exponents and isinstance(node, JsonNumber):
            node.allow_exp = False
        return node

    def _check_condition(self, s: dict, types: list[str], where: str) -> None:
        """Refuse what a test cannot judge exactly (see combine.py): a format jsonschema checks (its checkers are not
        our regexes), uniqueItems (a run-time check), and patterns whose classes differ between our dialect and
        Python's Unicode-aware `re` (which validators use)."""
        fmt = s.get("format")
        if "string" in types and isinstance(fmt, str) and fmt in CHECKED_FORMATS:
            raise UnsupportedSchemaError("format", where, f"format {fmt!r} inside not / if / oneOf / contains")
        if "array" in types and s.get("uniqueItems") is True and not (s.get("maxItems") is not None
                                                                       and s["maxItems"] <= 1):
            raise UnsupportedSchemaError("uniqueItems", where, "inside not / if / oneOf / contains")
        if "string" in types:
            for p in ([s["pattern"]] if "pattern" in s else []) + list(s.get("__patterns", [])):
                if isinstance(p, str) and _UNICODE_SENSITIVE.search(p):
                    raise UnsupportedSchemaError("pattern", where, f"{p!r} inside not / if / oneOf / contains: "
                                                 "its classes or case folding read non-ASCII text unlike Python's re")

    def _apply_nots(self, s: dict, where: str):
        """(s with the `not` forms that fold into it applied (False = unsatisfiable), the other `not` schemas).

        Folded: `not: {}` / `not: true` (nothing is valid), `not: false`, `not: {"type": ...}` (those types are removed),
        `not: {"required": [name]}` (that property may not appear). Every other one becomes a test the value must fail
        (a Combine in flat())."""
        nots = ([s["not"]] if "not" in s else []) + list(s.get("__nots", []))
        if not nots:
            return s, []
        s = {k: v for k, v in s.items() if k not in ("not", "__nots")}
        tests = []
        nots = list(nots)
        while nots:
            n = nots.pop(0)
            keys = {k for k in n if k not in _REF_ONLY_OK and k != "__src"} if isinstance(n, dict) else None
            if keys == {"anyOf"} and isinstance(n["anyOf"], list) and n["anyOf"]:
                nots.extend(n["anyOf"])  # not (A or B) == (not A) and (not B): each folds or is a test on its own
                continue
            if n is True or keys == set():
                return False, []
            if n is False:
                continue
            if keys == {"type"}:
                t = n["type"]
                if isinstance(t, str):
                    t = [t]
                if not isinstance(t, list) or not all(isinstance(x, str) and x in TYPES for x in t):
                    raise InvalidSchemaError(f"bad 'type' {n['type']!r}", where + "/not")
                forbidden = set(t)
                if "number" in forbidden:
                    forbidden.add("integer")
                allowed = [t for t in self.types_of(s) if t not in forbidden]
                if "integer" in forbidden and "number" in allowed:
                    tests.append(n)  # numbers that are not integers: a test (1.0 is an integer)
                    continue
                s["type"] = allowed
                continue
            if keys == {"required"} and isinstance(n["required"], list) and len(n["required"]) == 1:
                name = n["required"][0]
                if not isinstance(name, str):
                    raise InvalidSchemaError("'required' must be an array of strings", where + "/not")
                if name in s.get("required", []):
                    s["type"] = [t for t in self.types_of(s) if t != "object"]
                else:
                    s["__forbidden"] = list(s.get("__forbidden", [])) + [name]
                continue
            tests.append(n)
        return s, tests

    def types_of(self, s: dict) -> list[str]:
        if "type" in s:
            return list(s["type"])
        if self.strict:
            inferred = [t for t, keys in _TYPE_KEYWORDS.items() if any(k in s for k in keys)]
            if inferred:
                return inferred
        return [t for t in TYPES if t != "integer"]

    def _check_unsupported(self, s: dict, types: list[str], where: str) -> None:
        for key, applies_to in UNSUPPORTED.items():
            if key in s and (applies_to is None or applies_to in types):
                raise UnsupportedSchemaError(key, where)

    def _check_disjoint(self, branches: list[dict], where: str) -> None:
        for i in range(len(branches)):
            for j in range(i + 1, len(branches)):
                if not self._disjoint(branches[i], branches[j]):
                    raise UnsupportedSchemaError("oneOf", where, "branches that may overlap (only provably "
                                                 "disjoint oneOf branches are supported)")

    def _disjoint(self, a: dict, b: dict) -> bool:
        ta, tb = set(self._types_for_disjoint(a)), set(self._types_for_disjoint(b))
        if not (ta & tb):
            return True
        if "enum" in a and "enum" in b:
            if not ({value_key(v) for v in a["enum"]} & {value_key(v) for v in b["enum"]}):
                return True
        if ta <= {"object"} and tb <= {"object"}:
            for name in set(a.get("required", [])) & set(b.get("required", [])):
                pa, pb = a.get("properties", {}).get(name), b.get("properties", {}).get(name)
                ea, eb = self._enum_of(pa), self._enum_of(pb)
                if ea is not None and eb is not None and not (ea & eb):
                    return True
            # A key one branch requires that the other (explicitly closed) branch cannot hold.
            for x, y in ((a, b), (b, a)):
                if y.get("additionalProperties") is False and "patternProperties" not in y:
                    if any(r not in y.get("properties", {}) for r in x.get("required", [])):
                        return True
        return False

    def _types_for_disjoint(self, s: dict) -> list[str]:
        ts = set(s["type"]) if "type" in s else set(self.types_of(s))
        if "integer" in ts:
            ts.add("number")
        if "enum" in s:
            kinds = {_json_type(v) for v in s["enum"]}
            ts &= kinds | ({"number"} if "integer" in kinds else set())
        return sorted(ts)

    def _enum_of(self, sub):
        if not isinstance(sub, dict):
            return None
        if "$ref" in sub and all(k == "$ref" or k in _REF_ONLY_OK for k in sub):
            try:
                sub = self.doc.get(self.doc.resolve(sub["$ref"], ()))
            except Exception:
                return None
            if not isinstance(sub, dict):
                return None
        if "const" in sub:
            return {value_key(sub["const"])}
        if isinstance(sub.get("enum"), list):
            return {value_key(v) for v in sub["enum"]}
        return None

    # ---------------------------------------------------------------------------------- leaves
    def enum(self, s: dict, where: str) -> Node:
        values = s["enum"]
        if len(values) > MAX_ENUM_VALUES:
            raise ConstraintTooComplexError("enum values", MAX_ENUM_VALUES)
        checks = [self._enum_check(src) for src in s.get("__src", [])]
        options = set()
        kept = []
        for i, v in enumerate(values):
            if i % 256 == 255:
                self._check_deadline()
            if not all(check(v) for check in checks):
                continue
            kept.append(v)
            if self.condition:
                continue
            for sep in ((",", ":"), (", ", ": ")):
                for ascii_ in (True, False):
                    options.add(json.dumps(v, separators=sep, ensure_ascii=ascii_).encode("utf-8"))
            # JSON Schema calls 2 and 2.0 equal: offer both spellings of an integral number.
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 10**15:
                options.add(f"{v}.0".encode())
            elif isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
                options.add(str(int(v)).encode())
        if self.condition:
            return self._values(kept)
        return literal(*sorted(options))

    def _values(self, values: list) -> Node:
        """Condition mode: the JSON texts equal (as JSON Schema compares) to one of `values`, in every spelling a
        carrier may write: numbers by value (1, 1.0, 1.00), strings by decoded text (escapes), objects with their keys
        in any order, arrays item by item."""
        strings = sorted({v for v in values if isinstance(v, str)})
        out = [JsonString.build(strings_dfa(strings))] if strings else []
        # NOTE: integral numbers as one literal trie of their texts (and "-0" for 0), any zero fraction after it:
        # a number node per value made enums of thousands of integers thousands of nodes (exponents are off here)
        ints = {int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                and float(v).is_integer() and abs(v) < 1e15}
        if ints:
            texts = [str(i) for i in sorted(ints)] + (["-0"] if 0 in ints else [])
            out.append(integer_by_value(literal(*texts), Done()))
        seen = set()
        for v in values:
            k = value_key(v)
            if isinstance(v, str) or k in seen:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and abs(v) < 1e15:
                continue
            seen.add(k)
            out.append(self._value(v))
        return alt(out)

    def _value(self, v) -> Node:
        if v is None:
            return literal("null")
        if isinstance(v, bool):
            return literal("true" if v else "false")
        if isinstance(v, (int, float)):
            x = Fraction(v) if isinstance(v, int) else Fraction(repr(v))
            node = JsonNumber.build(False, x, False, x, False)
            return NEVER if node is NEVER else self._numbers(node)
        if isinstance(v, str):
            return JsonString.build(strings_dfa([v]))
        if isinstance(v, list):
            open_ = seq(literal("["), self._ws) if self.flexible else literal("[")
            close = seq(self._ws, literal("]")) if self.flexible else literal("]")
            return JsonArray.build([self._value(x) for x in v], None, len(v), len(v), open_, close,
                                   self._punct(",", True))
        open_ = seq(literal("{"), self._ws) if self.flexible else literal("{")
        close = seq(self._ws, literal("}")) if self.flexible else literal("}")
        return self._any_order_object(
            [(name, self._key([json.dumps(name), json.dumps(name, ensure_ascii=False)], True),
              self._key([json.dumps(name), json.dumps(name, ensure_ascii=False)], False), self._value(x), True)
             for name, x in v.items()], open_, close)

    def _any_order_object(self, specs: list, open_: Node, close: Node) -> Node:
        """An object with exactly the members `specs` (all required), keys in any order (objects.JsonObject)."""
        return JsonObject.build(specs, open_, close, any_order=True)

    def _enum_check(self, src):
        """value -> whether it is valid under the original subschema `src`.

        NOTE: src's own enum / const become a set lookup, the rest one validator built once: jsonschema checks enum
        membership by a scan, so validating each of n values against a schema holding them took O(n**2) (a 10,000
        value enum: minutes)."""
        if not isinstance(src, dict):
            return lambda v: src is not False
        keys = None
        if isinstance(src.get("enum"), list):
            keys = {value_key(x) for x in src["enum"]}
        if "const" in src:
            c = value_key(src["const"])
            keys = {c} if keys is None else keys & {c}
        rest = {k: x for k, x in src.items() if k not in ("enum", "const")}
        validator = None
        if any(not _is_annotation(k) for k in rest):
            try:
                validator = self._root_validator().evolve(schema=rest)
            except Exception:  # a schema jsonschema cannot evaluate: drop every value (never admit one unchecked)
                return lambda v: False

        def check(v) -> bool:
            if keys is not None and value_key(v) not in keys:
                return False
            if validator is None:
                return True
            try:
                return validator.is_valid(v)
            except Exception:  # as above
                return False

        return check

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            raise ConstraintTooComplexError("seconds compiling the schema", self._compile_timeout_s,
                                            "STRUCTGEN_COMPILE_TIMEOUT_S")

    def _root_validator(self):
        if self._validator is None:
            root = self.doc.root
            cls = jsonschema.validators.validator_for(root, default=jsonschema.Draft202012Validator) \
                if isinstance(root, dict) else jsonschema.Draft202012Validator
            self._validator = cls(root, format_checker=cls.FORMAT_CHECKER)
        return self._validator

    def number(self, s: dict, integer: bool, where: str) -> Node:
        lo, lo_x, hi, hi_x = None, False, None, False
        if "minimum" in s:
            lo = _number(s["minimum"], "minimum", where)
        if "exclusiveMinimum" in s:
            v = _number(s["exclusiveMinimum"], "exclusiveMinimum", where)
            if lo is None or v >= lo:
                lo, lo_x = v, True
        if "maximum" in s:
            hi = _number(s["maximum"], "maximum", where)
        if "exclusiveMaximum" in s:
            v = _number(s["exclusiveMaximum"], "exclusiveMaximum", where)
            if hi is None or v <= hi:
                hi, hi_x = v, True
        mult, float_divisor = None, None
        if "multipleOf" in s:  # merge() keeps the divisors of an allOf it could not combine in __multiples
            mult, float_divisor = multiple_of([s["multipleOf"]] + list(s.get("__multiples", [])), where)
        return JsonNumber.build(integer, lo, lo_x, hi, hi_x, mult, float_divisor)

    def string(self, s: dict, where: str) -> Node:
        min_len = _count(s.get("minLength", 0), "minLength", where)
        max_len = _count_max(s, "maxLength", where)
        patterns = ([s["pattern"]] if "pattern" in s else []) + list(s.get("__patterns", []))
        for p in patterns:
            if not isinstance(p, str):
                raise InvalidSchemaError("'pattern' must be a string", where)
        fmt = s.get("format")
        rx = format_regex(fmt) if isinstance(fmt, str) else None
        if patterns or rx is not None:
            try:
                dfa = _string_dfa(tuple(patterns), rx)
            except InvalidRegexError as e:
                raise UnsupportedSchemaError("pattern", where, str(e)) from None
            except ConstraintTooComplexError as e:
                raise ConstraintTooComplexError(f"'pattern' at {where}: {e.what}", e.limit) from None
        else:
            if self._plain_string is None:
                self._plain_string = CharDFA.anything()
            dfa = self._plain_string
        if fmt is not None and rx is None and fmt in CHECKED_FORMATS:
            raise UnsupportedSchemaError("format", where, f"format {fmt!r}")
        return JsonString.build(dfa, min_len, max_len)

    # ---------------------------------------------------------------------------- containers
    def _punct(self, text: str, space_after: bool = False) -> Node:
        if self.flexible:
            return seq(self._ws, literal(text), self._ws)
        return literal(text, text + " ") if space_after else literal(text)

    def array(self, s: dict, at: tuple, counts: dict) -> Node:
        if "contains" in s:
            return self._contains_array(s, at, counts)
        where = pointer_str(at)
        prefix_schemas = s.get("prefixItems", [])
        if not isinstance(prefix_schemas, list):
            raise InvalidSchemaError("'prefixItems' must be an array", where)
        prefix = [self.schema(p, at + ("prefixItems", i), counts) for i, p in enumerate(prefix_schemas)]
        items = self.schema(s["items"], at + ("items",), counts) if "items" in s else self.any_value(self.any_depth)
        min_items = _count(s.get("minItems", 0), "minItems", where)
        max_items = _count_max(s, "maxItems", where)
        open_ = seq(literal("["), self._ws) if self.flexible else literal("[")
        close = seq(self._ws, literal("]")) if self.flexible else literal("]")
        unique = s.get("uniqueItems") is True and (max_items is None or max_items > 1)
        if unique:
            # NOTE: enforced at run time (structgen/fsm/unique_cursor.py); statically only the item counts it implies
            limits = unique_limits(self._distinct_values(), prefix, items, min_items, max_items, where)
            if limits is None:
                return NEVER
            min_items, max_items = limits
        node = JsonArray.build(prefix, items, min_items, max_items, open_, close, self._punct(",", True),
                               unique=unique, ws=self._ws)
        if isinstance(node, JsonArray) and node.unique:
            self.unique_arrays[id(node)] = where
        return node

    def _distinct_values(self) -> DistinctValues:
        hit = self.__dict__.get("_distinct")
        if hit is None:
            hit = self._distinct = DistinctValues()
        return hit

    def _contains_array(self, s: dict, at: tuple, counts: dict) -> Node:
        """An array with `contains` (minContains default 1; maxContains optional): a counter of matching items."""
        where = pointer_str(at)
        min_c = _count(s.get("minContains", 1), "minContains", where)
        max_c = _count_max(s, "maxContains", where)
        rest = {k: v for k, v in s.items() if k not in ("contains", "minContains", "maxContains")}
        if min_c == 0 and max_c is None:
            return self.array(rest, at, counts)  # `contains` asserts nothing then
        if s.get("uniqueItems") is True and not (s.get("maxItems") is not None and s["maxItems"] <= 1):
            raise UnsupportedSchemaError("contains", where, "together with uniqueItems")
        prefix_schemas = s.get("prefixItems", [])
        prefix = [self.schema(p, at + ("prefixItems", i), counts) for i, p in enumerate(prefix_schemas)]
        items = self.schema(s["items"], at + ("items",), counts) if "items" in s else self.any_value(self.any_depth)
        prefix, items = possible_positions(prefix, items)  # as JsonArray.build
        min_items = _count(s.get("minItems", 0), "minItems", where)
        max_items = _count_max(s, "maxItems", where)
        if items is None:
            max_items = len(prefix) if max_items is None else min(max_items, len(prefix))
        if max_items is not None and min_items > max_items:
            return NEVER
        carrier = alt(prefix + ([items] if items is not None else []))
        test = s["contains"]
        if _asserts_nothing(test):
            test = True  # every item matches: hits only, no product to run
        else:
            test = self._condition_for(carrier).schema(test, at + ("contains",), counts)
        open_ = seq(literal("["), self._ws) if self.flexible else literal("[")
        close = seq(self._ws, literal("]")) if self.flexible else literal("]")
        return JsonContainsArray.build(prefix, items, test, min_items, max_items, min_c, max_c, open_, close,
                                       self._punct(",", True))

    def _key(self, name_forms: list[str], first: bool) -> Node:
        key = (tuple(name_forms), first)
        hit = self._keys.get(key)
        if hit is None:
            hit = self._keys[key] = self._build_key(name_forms, first)
        return hit

    def _build_key(self, name_forms: list[str], first: bool) -> Node:
        """`"name":` (and `, "name":` after another member). NOTE: in condition mode a test must know the key in
        every spelling a carrier may write (`"\\u0061"` is `"a"`): a string leaf of the decoded name then."""
        if self.condition:
            key_str = JsonString.build(strings_dfa([json.loads(name_forms[0])]))
            return seq(key_str, self._colon()) if first else seq(self._punct(",", True), key_str, self._colon())
        if self.flexible:
            head = () if first else (self._ws, literal(","), self._ws)
            return seq(*head, literal(*name_forms), self._ws, literal(":"), self._ws)
        seps = [""] if first else [",", ", "]
        return literal(*{sep + n + c for sep in seps for n in name_forms for c in (":", ": ")})

    def _colon(self) -> Node:
        return seq(self._ws, literal(":"), self._ws) if self.flexible else literal(":", ": ")

    def object(self, s: dict, at: tuple, counts: dict) -> Node:
        """The object node: named keys (properties, required, dependentRequired, a propertyNames enum) with the rules
        object_keys finds for them, classes of extra keys, the key-set keywords; dependentSchemas split into cases."""
        where = pointer_str(at)
        if s.get("dependentSchemas"):
            return self._dependent_schemas(s, at, counts)
        layers = layers_of(s)
        required = s.get("required", [])
        depends = s.get("dependentRequired", {})
        forbidden = set(s.get("__forbidden", ()))
        key_names = self._property_names(s, at, counts)
        # Strict mode closes objects that declare their keys; a bare `{"type": "object"}` stays free-form (closing it
        # would leave only `{}`). Names the schema requires (or may require) still come, with any value.
        closed = self.strict and any(lay.declares for lay in layers) and \
            all(lay.additional is MISSING for lay in layers)
        loose = set(required) | {d for ds in depends.values() for d in ds}
        names = list(dict.fromkeys([*(n for lay in layers for n in lay.properties), *required, *depends,
                                    *(d for ds in depends.values() for d in ds), *key_names.enum]))
        values: dict = {}
        specs = []
        for i, name in enumerate(names):
            if i % 256 == 255:
                self._check_deadline()
            try:
                rules = named_rules(name, layers, closed and name not in loose)
            except re.error as e:
                raise InvalidSchemaError(f"bad patternProperties regex: {e}", where) from None
            if rules is None or name in forbidden or not key_names.allows(name):
                value = NEVER
            else:
                value = self._rules_value(rules, layers, at, counts, values)
            forms = list(dict.fromkeys([json.dumps(name), json.dumps(name, ensure_ascii=False)]))
            specs.append((name, self._key(forms, True), self._key(forms, False), value, name in required))
        extras = self._extra_classes(layers, key_names, closed, names + sorted(forbidden - set(names)), at, counts,
                                     values)
        min_p = _count(s.get("minProperties", 0), "minProperties", where)
        max_p = _count_max(s, "maxProperties", where)
        if depends and min_p and max_p is not None and has_mutual_dependencies(dependency_closure(names, depends)):
            raise UnsupportedSchemaError("dependentRequired", where, "keys that require each other, together with "
                                         "both minProperties and maxProperties")
        if self.condition and min_p > 1 and extras:
            # NOTE: extra keys of one class count once towards the minimum (they may repeat); a test must not
            # reject an object with enough distinct ones.
            raise UnsupportedSchemaError("minProperties", where, "above 1 with undeclared keys, inside not / if / "
                                         "oneOf / contains")
        open_ = seq(literal("{"), self._ws) if self.flexible else literal("{")
        close = seq(self._ws, literal("}")) if self.flexible else literal("}")
        return JsonObject.build(specs, open_, close, extras=extras, min_props=min_p, max_props=max_p,
                                depends=depends, any_order=self.property_order == "any")

    def _rules_value(self, rules: tuple, layers: list, at: tuple, counts: dict, memo: dict) -> Node:
        """The value node of a key that answers to `rules` (object_keys), compiled once per object."""
        hit = memo.get(rules)
        if hit is None:
            if not rules:
                hit = self.any_value(self.any_depth)
            else:
                subs = [rule_schema(r, layers) for r in rules]
                _, kind, key = rules[0]
                where = at + ((kind,) if key is None else (kind, key))
                hit = self.schema(subs[0] if len(subs) == 1 else {"allOf": subs}, where, counts)
            memo[rules] = hit
        return hit

    def _property_names(self, s: dict, at: tuple, counts: dict) -> KeyNames:
        """What `propertyNames` lets through: named keys are checked with jsonschema (exact); extra keys come from the
        string language of its type / enum / const / pattern / minLength / maxLength / format."""
        pn = s.get("propertyNames", True)
        if pn is True:
            return KeyNames()
        where = pointer_str(at + ("propertyNames",))
        if pn is False:
            return KeyNames(allows=lambda name: False, extras=False)
        if not isinstance(pn, dict):
            raise InvalidSchemaError("'propertyNames' must be a schema (an object or a boolean)", where)
        allows = self._enum_check(pn)
        f, _ = self.flatten(pn, at + ("propertyNames",), counts, 0)
        if f is False:
            return KeyNames(allows=lambda name: False, extras=False)
        if "enum" in f:
            return KeyNames(allows=allows, enum=tuple(dict.fromkeys(v for v in f["enum"] if isinstance(v, str)
                                                                    and allows(v))), extras=False)
        for k in ("anyOf", "oneOf", "not", "__nots", "if", "__conds", "__oneofs", "$dynamicRef", "$recursiveRef"):
            if k in f:
                raise UnsupportedSchemaError("propertyNames", where, f"'{k}' inside propertyNames (supported there: "
                                             "type, enum, const, pattern, minLength, maxLength, format)")
        if "type" in f and "string" not in f["type"]:
            return KeyNames(allows=allows, extras=False)
        searched = tuple(([f["pattern"]] if "pattern" in f else []) + list(f.get("__patterns", ())))
        full = ()
        fmt = f.get("format")
        if isinstance(fmt, str):
            rx = format_regex(fmt)
            if rx is not None and not self.condition:
                full = (rx,)
            elif fmt in CHECKED_FORMATS:
                raise UnsupportedSchemaError("format", where, f"format {fmt!r} in propertyNames"
                                             + (" inside not / if / oneOf / contains" if self.condition else ""))
        if self.condition:
            for p in searched:
                if not exact_pattern(p):
                    raise UnsupportedSchemaError("propertyNames", where, f"pattern {p!r} inside not / if / oneOf / "
                                                 "contains: it reads some text unlike Python's re")
        return KeyNames(allows=allows, searched=searched, full=full,
                        min_length=_count(f.get("minLength", 0), "minLength", where),
                        max_length=_count_max(f, "maxLength", where))

    def _extra_classes(self, layers: list, key_names: KeyNames, closed: bool, exclude: list, at: tuple,
                       counts: dict, values: dict) -> list:
        """(first member key, next member key, value) per class of extra keys (see object_keys)."""
        if not key_names.extras:
            return []
        where = pointer_str(at)
        patterns = sorted({rx for lay in layers for rx in lay.patterns})
        if len(patterns) > MAX_KEY_PATTERNS:
            raise UnsupportedSchemaError("patternProperties", where, f"more than {MAX_KEY_PATTERNS} patterns on the "
                                         "keys of one object")
        rules_of = lambda label: extra_rules(label, layers, closed)  # noqa: E731
        exact = needs_exact_labels(patterns, rules_of)
        if exact and self.condition:
            for p in patterns:
                if not exact_pattern(p):
                    raise UnsupportedSchemaError("patternProperties", where, f"pattern {p!r} inside not / if / oneOf "
                                                 "/ contains: it reads some text unlike Python's re")
        if not patterns and not key_names.searched and not key_names.full:
            rules = rules_of(frozenset())
            classes = [] if rules is None else [(self._any_string(), rules)]
        else:
            try:
                product = key_product(tuple(patterns), key_names.searched, key_names.full,
                                      exact and not self.condition)
            except InvalidRegexError as e:
                keyword = "propertyNames" if e.pattern in key_names.searched else "patternProperties"
                raise UnsupportedSchemaError(keyword, where, str(e)) from None
            except ConstraintTooComplexError as e:
                raise ConstraintTooComplexError(f"key patterns at {where}: {e.what}", e.limit) from None
            groups: dict = {}
            for lab in sorted(product.reachable_labels()):
                rules = rules_of(frozenset(patterns[i] for i in range(len(patterns)) if lab >> i & 1))
                if rules is not None:
                    groups.setdefault(rules, []).append(lab)
            classes = [(product.dfa(frozenset(labs)), rules) for rules, labs in groups.items()]
        out = []
        for dfa, rules in classes:
            key_str = JsonString.build(dfa, key_names.min_length, key_names.max_length, exclude=exclude)
            if key_str is NEVER:
                continue
            value = self._rules_value(rules, layers, at, counts, values)
            if value is NEVER:
                continue
            out.append((seq(key_str, self._colon()), seq(self._punct(",", True), key_str, self._colon()), value))
        return out

    def _dependent_schemas(self, s: dict, at: tuple, counts: dict) -> Node:
        """dependentSchemas: one object per choice of which trigger keys appear (present: required, their schemas
        merged in; absent: forbidden). Subschemas that only require names become dependentRequired, `true` ones
        drop, `false` ones forbid their trigger."""
        where = pointer_str(at)
        deps = s["dependentSchemas"]
        if not isinstance(deps, dict):
            raise InvalidSchemaError("'dependentSchemas' must be an object", where)
        base = {k: v for k, v in s.items() if k != "dependentSchemas"}
        requires = {t: list(ds) for t, ds in base.get("dependentRequired", {}).items()}
        forbidden = list(base.get("__forbidden", ()))
        cases = []
        for t, sub in deps.items():
            f, sub_counts = self.flatten(sub, at + ("dependentSchemas", t), counts, 0)
            if f is False:
                forbidden.append(t)
                continue
            asserts = {k for k in f if not _is_annotation(k)}
            if not asserts:
                continue
            if asserts == {"required"}:
                requires[t] = list(dict.fromkeys(requires.get(t, []) + list(f["required"])))
                continue
            cases.append((t, f, sub_counts))
        base["dependentRequired"] = requires
        base["__forbidden"] = forbidden
        if not cases:
            return self.object(base, at, counts)
        if len(cases) > MAX_DEPENDENT_SCHEMAS:
            raise UnsupportedSchemaError("dependentSchemas", where, f"more than {MAX_DEPENDENT_SCHEMAS} trigger keys "
                                         "with schemas on one object")
        branches = []
        for mask in range(1 << len(cases)):
            v = {**base, "type": ["object"]}
            present = [t for i, (t, _, _) in enumerate(cases) if mask >> i & 1]
            v["required"] = list(dict.fromkeys(list(v.get("required", [])) + present))
            v["__forbidden"] = forbidden + [t for i, (t, _, _) in enumerate(cases) if not mask >> i & 1]
            c = counts
            for i, (t, f, sub_counts) in enumerate(cases):
                if mask >> i & 1:
                    v = merge(v, f, where)
                    c = {k: max(c.get(k, 0), sub_counts.get(k, 0)) for k in c.keys() | sub_counts.keys()}
            branches.append(self.flat(v, at, c))
        return alt(branches)

    def _any_string(self) -> CharDFA:
        if self._plain_string is None:
            self._plain_string = CharDFA.anything()
        return self._plain_string

    def any_value(self, depth: int) -> Node:
        """Any JSON value, containers nested at most `depth` deep."""
        hit = self._any.get(depth)
        if hit is not None:
            return hit
        scalars = [literal("null", "true", "false"), self._numbers(JsonNumber.build(False)),
                   JsonString.build(self._any_string())]
        if depth > 0:
            inner = self.any_value(depth - 1)
            open_a = seq(literal("["), self._ws) if self.flexible else literal("[")
            close_a = seq(self._ws, literal("]")) if self.flexible else literal("]")
            scalars.append(JsonArray.build([], inner, 0, None, open_a, close_a, self._punct(",", True)))
            key_str = JsonString.build(self._any_string())
            colon = seq(self._ws, literal(":"), self._ws) if self.flexible else literal(":", ": ")
            open_o = seq(literal("{"), self._ws) if self.flexible else literal("{")
            close_o = seq(self._ws, literal("}")) if self.flexible else literal("}")
            extra = (seq(key_str, colon), seq(self._punct(",", True), key_str, colon), inner)
            scalars.append(JsonObject.build([], open_o, close_o, extra))
        node = alt(scalars)
        self._any[depth] = node
        return node


# allOf members with their own `if` or `oneOf` that merge() could not fold into the first one (normalize.merge keeps
# them in `__conds` / `__oneofs`); each one doubles the case split (if) or adds an exactly-one group (oneOf).
MAX_DEFERRED_CONDITIONS = 64
MAX_SPLIT_CONDITIONS = 3  # general `if`s under one allOf, each splitting the cases of the ones before in two


def _next_deferred(s: dict, where: str) -> dict:
    """s with its next deferred `if`/`then`/`else` or `oneOf` made the keyword itself, once the slot is free."""
    conds, oneofs = s.get("__conds"), s.get("__oneofs")
    if not conds and not oneofs:
        return s
    if len(conds or ()) + len(oneofs or ()) > MAX_DEFERRED_CONDITIONS:
        raise ConstraintTooComplexError(f"if / oneOf keywords combined by allOf at {where}", MAX_DEFERRED_CONDITIONS)
    s = dict(s)
    if conds and "if" not in s:
        first, *more = conds
        s.pop("__conds")
        s.update(first)
        if more:
            s["__conds"] = more
    if oneofs and "oneOf" not in s:
        first, *more = oneofs
        s.pop("__oneofs")
        s["oneOf"] = first
        if more:
            s["__oneofs"] = more
    return s


def _is_pure_ref_branches(rest: dict, branches: list) -> bool:
    """True iff the siblings of an anyOf assert nothing and every branch is a bare `$ref` (annotations aside)."""
    if any(k != "__src" and k not in _REF_ONLY_OK for k in rest):
        return False
    return all(isinstance(b, dict) and "$ref" in b and all(k == "$ref" or k in _REF_ONLY_OK for k in b)
               for b in branches)


_REF_ONLY_OK = frozenset({"title", "description", "$comment", "examples", "default", "$id", "id", "$schema",
                          "deprecated", "readOnly", "writeOnly", "definitions", "$defs", "markdownDescription"})


def _count(v, key: str, where: str) -> int:
    """A length or count keyword's value; one past LENGTH_HORIZON is refused (no output could be that long)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InvalidSchemaError(f"'{key}' must be a non-negative integer", where)
    if v > LENGTH_HORIZON:
        raise UnsupportedSchemaError(key, where, f"{v} is more than any output can hold (the limit is "
                                     f"{LENGTH_HORIZON}; the token budget refuses far less)")
    return v


def _count_max(s: dict, key: str, where: str) -> int | None:
    """An upper bound keyword's value, None where absent. NOTE: a bound past LENGTH_HORIZON is no bound at all for
    anything that can be generated (schemas write 2**53 - 1 for "unbounded"), so it is read as absent."""
    if key not in s:
        return None
    v = s[key]
    if isinstance(v, float) and v.is_integer() and v > LENGTH_HORIZON:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v > LENGTH_HORIZON:
        return None
    return _count(v, key, where)


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


# Keywords that constrain one JSON type only (a value of another type passes them), beyond _TYPE_KEYWORDS.
_ONLY_FOR = {t: set(keys) for t, keys in _TYPE_KEYWORDS.items()}
_ONLY_FOR["object"] |= {"unevaluatedProperties", "dependencies", "__forbidden"}
_ONLY_FOR["array"] |= {"uniqueItems", "contains", "minContains", "maxContains", "unevaluatedItems"}
_ONLY_FOR["number"] |= {"__multiples"}
_ONLY_FOR["string"] |= {"contentEncoding", "contentMediaType"}


def _matches_every(s: dict, t: str) -> bool:
    """Whether the flattened subschema `s` surely admits every value of JSON type `t` ("number" covers integers):
    no `type` excluding it, no keyword for that type, no keyword that applies to every type. Conservative: False when
    unsure."""
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if t not in types:
            return False
    for k in s:
        if k == "type" or _is_annotation(k) or (k == "__src" and "enum" not in s):
            continue
        if k in _ONLY_FOR.get(t, ()):
            return False
        if not any(k in keys for keys in _ONLY_FOR.values()):
            return False  # enum, const, allOf, anyOf, not, $ref, ...: may constrain this type too
    return True


def _asserts_nothing(schema) -> bool:
    """True for `true` and for an object of annotations only (a subschema every value matches)."""
    if schema is True:
        return True
    return isinstance(schema, dict) and all(_is_annotation(k) or k in _REF_ONLY_OK for k in schema)


def _uses_keywords(schema, keywords) -> bool:
    """Whether any object in the schema document has one of `keywords` as a key (iterative; conservative: a property
    named like a keyword counts too)."""
    stack = [schema]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if not keywords.isdisjoint(v):
                return True
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False
