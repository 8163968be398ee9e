"""Prepared schema dicts -> the node graph (nodes.py and the leaves in strings / numbers / objects / arrays).

Recursion through `$ref` is unrolled: each ref target may be entered at most `max_recursion_depth` times
on one path; past that the branch is unsatisfiable (NEVER) and pruned, so output stays valid and finite.
Compiled ref targets are memoized by (target, the visit counts of the targets it can reach), so schemas
that share definitions without recursion compile each definition once.
"""

from __future__ import annotations

import json
import re
import time
from fractions import Fraction
from functools import lru_cache

import jsonschema

from ...errors import ConstraintTooComplexError, InvalidRegexError, InvalidSchemaError, UnsupportedSchemaError
from .. import regex_dfa
from ..regex import CharDFA, parse_char_fsm
from .arrays import JsonArray
from .formats import CHECKED_FORMATS, format_regex
from .lengths import LENGTH_HORIZON
from .nodes import NEVER, Node, Whitespace, alt, literal, seq
from .normalize import TYPES, SchemaDocument, _is_annotation, _number, merge, pointer_str, prepare, value_key
from .numbers import JsonNumber
from .objects import JsonObject
from .strings import JsonString

MAX_ENUM_VALUES = 10_000
MAX_NODES = 100_000
MAX_FLATTEN_DEPTH = 64

# Assertion keywords we do not enforce, and the instance type they constrain (None = every type).
UNSUPPORTED = {
    "not": None, "if": None, "$dynamicRef": None, "$recursiveRef": None,
    "dependentRequired": "object", "dependentSchemas": "object",
    "dependencies": "object", "propertyNames": "object", "unevaluatedProperties": "object",
    "unevaluatedItems": "array", "contains": "array",
}
_TYPE_KEYWORDS = {
    "object": ("properties", "required", "additionalProperties", "minProperties", "maxProperties"),
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
                 compile_timeout_s: float = 30.0):
        if whitespace not in ("compact", "flexible"):
            raise ValueError(f"whitespace must be 'compact' or 'flexible', not {whitespace!r}")
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

    # --------------------------------------------------------------------------------- entry points
    def compile(self) -> Node:
        # NOTE: counts[target] = times the target is already on the current path; the root is on it from the start.
        node = self.schema(self.doc.root, (), {(): 1})
        if node is NEVER:
            raise InvalidSchemaError("the schema admits no value that can be generated")
        return node

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
                self._check_disjoint([m for m, _, _ in merged], where)
            return alt(self.flat(m, a, c) for m, c, a in merged)
        if "enum" in s:
            return self.enum(s, where)  # NOTE: enum values are checked with jsonschema: `not` included
        s = self._apply_nots(s, where)
        if s is False:
            return NEVER
        types = self.types_of(s)
        self._check_unsupported(s, types, where)
        branches = []
        for t in types:
            if t == "null":
                branches.append(literal("null"))
            elif t == "boolean":
                branches.append(literal("true", "false"))
            elif t == "integer":
                if "number" not in types:
                    branches.append(self.number(s, True, where))
            elif t == "number":
                branches.append(self.number(s, False, where))
            elif t == "string":
                branches.append(self.string(s, where))
            elif t == "array":
                branches.append(self.array(s, at, counts))
            elif t == "object":
                branches.append(self.object(s, at, counts))
        return alt(branches)

    def _apply_nots(self, s: dict, where: str):
        """Fold the `not` forms we can express exactly into `s` (False = unsatisfiable); refuse the rest.

        Supported: `not: {}` / `not: true` (nothing is valid), `not: false`, `not: {"type": ...}` (those types
        are removed), `not: {"required": [name]}` (that property may not appear)."""
        nots = ([s["not"]] if "not" in s else []) + list(s.get("__nots", []))
        if not nots:
            return s
        s = {k: v for k, v in s.items() if k not in ("not", "__nots")}
        for n in nots:
            keys = {k for k in n if k not in _REF_ONLY_OK and k != "__src"} if isinstance(n, dict) else None
            if n is True or keys == set():
                return False
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
                    raise UnsupportedSchemaError("not", where, "numbers that are not integers")
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
            raise UnsupportedSchemaError("not", where)
        return s

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
        if s.get("uniqueItems") is True and "array" in types:
            if not (s.get("maxItems") is not None and s["maxItems"] <= 1):
                raise UnsupportedSchemaError("uniqueItems", where)

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
        for i, v in enumerate(values):
            if i % 256 == 255:
                self._check_deadline()
            if not all(check(v) for check in checks):
                continue
            for sep in ((",", ":"), (", ", ": ")):
                for ascii_ in (True, False):
                    options.add(json.dumps(v, separators=sep, ensure_ascii=ascii_).encode("utf-8"))
            # JSON Schema calls 2 and 2.0 equal: offer both spellings of an integral number.
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 10**15:
                options.add(f"{v}.0".encode())
            elif isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
                options.add(str(int(v)).encode())
        return literal(*sorted(options))

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
        mult = None
        if "multipleOf" in s:
            mult = _number(s["multipleOf"], "multipleOf", where)
            if mult <= 0:
                raise InvalidSchemaError("'multipleOf' must be > 0", where)
            if mult.denominator != 1:
                # jsonschema divides floats for a fractional multipleOf; exactness there is not ours to give
                raise UnsupportedSchemaError("multipleOf", where, "only integer multipleOf is supported")
        return JsonNumber.build(integer, lo, lo_x, hi, hi_x, mult)

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
        return JsonArray.build(prefix, items, min_items, max_items, open_, close, self._punct(",", True))

    def _key(self, name_forms: list[str], first: bool) -> Node:
        key = (tuple(name_forms), first)
        hit = self._keys.get(key)
        if hit is None:
            hit = self._keys[key] = self._build_key(name_forms, first)
        return hit

    def _build_key(self, name_forms: list[str], first: bool) -> Node:
        if self.flexible:
            head = () if first else (self._ws, literal(","), self._ws)
            return seq(*head, literal(*name_forms), self._ws, literal(":"), self._ws)
        seps = [""] if first else [",", ", "]
        return literal(*{sep + n + c for sep in seps for n in name_forms for c in (":", ": ")})

    def object(self, s: dict, at: tuple, counts: dict) -> Node:
        where = pointer_str(at)
        props = s.get("properties", {})
        if not isinstance(props, dict):
            raise InvalidSchemaError("'properties' must be an object", where)
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise InvalidSchemaError("'required' must be an array of strings", where)
        if "additionalProperties" in s:
            extra_schema = s["additionalProperties"]
        else:
            # Strict mode closes objects that declare their keys; a bare `{"type": "object"}` stays free-form
            # (closing it would leave only `{}`).
            declares = "properties" in s or "patternProperties" in s
            extra_schema = False if self.strict and declares else True
        extra_value = self.schema(extra_schema, at + ("additionalProperties",), counts)
        forbidden = set(s.get("__forbidden", ()))
        declared = [(n, sub) for n, sub in props.items() if n not in forbidden]
        for r in required:
            if r not in props:
                # Required but undeclared: it must come as an extra key (strict mode: any value).
                declared.append((r, extra_schema if "additionalProperties" in s or not self.strict else True))
        declared = self._with_pattern_properties(s, declared, where)
        req = set(required)
        specs = []
        for name, sub in declared:
            forms = list(dict.fromkeys([json.dumps(name), json.dumps(name, ensure_ascii=False)]))
            value = self.schema(sub, at + ("properties", name), counts) if name in props else \
                self.schema(sub, at + ("additionalProperties",), counts)
            specs.append((name, self._key(forms, True), self._key(forms, False), value, name in req))
        extra = None
        if extra_value is not NEVER and "patternProperties" in s:
            raise UnsupportedSchemaError("patternProperties", where, "together with allowed additional properties "
                                         "(supported when no undeclared keys are generated)")
        if extra_value is not NEVER:
            key_str = JsonString.build(self._any_string(), exclude=[n for n, _ in declared] + sorted(forbidden))
            colon = seq(self._ws, literal(":"), self._ws) if self.flexible else literal(":", ": ")
            first = seq(key_str, colon)
            nxt = seq(self._punct(",", True), key_str, colon)
            extra = (first, nxt, extra_value)
        min_p = _count(s.get("minProperties", 0), "minProperties", where)
        max_p = _count_max(s, "maxProperties", where)
        open_ = seq(literal("{"), self._ws) if self.flexible else literal("{")
        close = seq(self._ws, literal("}")) if self.flexible else literal("}")
        return JsonObject.build(specs, open_, close, extra, min_p, max_p)

    @staticmethod
    def _with_pattern_properties(s: dict, declared: list, where: str) -> list:
        """Declared properties whose names match a `patternProperties` regex must satisfy that schema too
        (Python's re.search, as jsonschema does)."""
        patterns = s.get("patternProperties")
        if not patterns:
            return declared
        if not isinstance(patterns, dict):
            raise InvalidSchemaError("'patternProperties' must be an object", where)
        out = []
        for name, sub in declared:
            extra = []
            for rx, psub in patterns.items():
                try:
                    hit = re.search(rx, name) is not None
                except re.error as e:
                    raise InvalidSchemaError(f"bad patternProperties regex {rx!r}: {e}", where) from None
                if hit:
                    extra.append(psub)
            out.append((name, {"allOf": [sub, *extra]} if extra else sub))
        return out

    def _any_string(self) -> CharDFA:
        if self._plain_string is None:
            self._plain_string = CharDFA.anything()
        return self._plain_string

    def any_value(self, depth: int) -> Node:
        """Any JSON value, containers nested at most `depth` deep."""
        hit = self._any.get(depth)
        if hit is not None:
            return hit
        scalars = [literal("null", "true", "false"), JsonNumber.build(False),
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
