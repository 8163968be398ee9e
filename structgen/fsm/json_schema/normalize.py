"""Schema text to one flat dict per subschema: local `$ref` resolution (JSON pointers, anchors, the root's
`$id`), draft-04/07 spellings rewritten to 2020-12, `const` as a one-value `enum`, and `allOf` / `$ref`
siblings merged into a single dict (`merge`).

Every prepared dict carries `__src`: the original subschemas it was built from. `enum` values are checked
against those with jsonschema, so whatever a merge could not express exactly is still enforced there.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from functools import lru_cache
from urllib.parse import unquote

from ...errors import ConstraintTooComplexError, InvalidSchemaError, UnsupportedSchemaError

TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
MAX_ANYOF_PRODUCT = 64


@lru_cache(maxsize=1 << 16)
def pointer_str(tokens: tuple) -> str:
    return "#" + "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


class SchemaDocument:
    """The root schema and where its local references lead."""

    def __init__(self, root):
        self.root = root
        base = root.get("$id", root.get("id")) if isinstance(root, dict) else None
        self.base = base.split("#")[0] if isinstance(base, str) else ""
        self.anchors: dict[str, tuple] = {}
        self.embedded: list[tuple] = []  # pointers of subschemas with their own base URI
        self._refs_under: dict[tuple, set] = {}
        self._reach: dict[tuple, frozenset] = {}
        self._scan(root, ())

    def _scan(self, node, tokens: tuple) -> None:
        if isinstance(node, dict):
            if tokens:
                for key in ("$id", "id"):
                    ident = node.get(key)
                    if isinstance(ident, str):
                        if ident.startswith("#"):
                            self.anchors.setdefault(ident[1:], tokens)
                        elif key == "$id" or "properties" not in tokens[-1:]:
                            self.embedded.append(tokens)
            anchor = node.get("$anchor")
            if isinstance(anchor, str):
                self.anchors.setdefault(anchor, tokens)
            for k, v in node.items():
                self._scan(v, tokens + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                self._scan(v, tokens + (i,))

    def resolve(self, ref, at: tuple) -> tuple:
        """The pointer tokens `ref` (found at pointer `at`) names. Remote refs raise UnsupportedSchemaError."""
        where = pointer_str(at)
        if not isinstance(ref, str):
            raise InvalidSchemaError("$ref must be a string", where)
        for e in self.embedded:
            if at[: len(e)] == e:
                raise UnsupportedSchemaError("$ref", where, "references inside an embedded resource ($id)")
        if self.base and ref.startswith(self.base):
            ref = ref[len(self.base):]
        if not ref.startswith("#"):
            raise UnsupportedSchemaError("$ref", where, f"remote reference {ref!r}")
        frag = unquote(ref[1:])
        if frag and not frag.startswith("/"):
            if frag not in self.anchors:
                raise InvalidSchemaError(f"$ref to unknown anchor {ref!r}", where)
            return self.anchors[frag]
        tokens = []
        node = self.root
        for raw in frag.split("/")[1:] if frag else []:
            tok = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list):
                try:
                    idx = int(tok)
                    node = node[idx]
                except (ValueError, IndexError):
                    raise InvalidSchemaError(f"$ref {ref!r} does not resolve", where) from None
                tokens.append(idx)
            elif isinstance(node, dict) and tok in node:
                node = node[tok]
                tokens.append(tok)
            else:
                raise InvalidSchemaError(f"$ref {ref!r} does not resolve", where)
        return tuple(tokens)

    def get(self, tokens: tuple):
        node = self.root
        for t in tokens:
            node = node[t]
        return node

    def _refs_in(self, tokens: tuple) -> set:
        hit = self._refs_under.get(tokens)
        if hit is None:
            found: set = set()
            stack = [(self.get(tokens), tokens)]
            while stack:
                node, at = stack.pop()
                if isinstance(node, dict):
                    if isinstance(node.get("$ref"), str):
                        try:
                            found.add(self.resolve(node["$ref"], at))
                        except (InvalidSchemaError, UnsupportedSchemaError):
                            pass
                    stack.extend((v, at + (k,)) for k, v in node.items())
                elif isinstance(node, list):
                    stack.extend((v, at + (i,)) for i, v in enumerate(node))
            hit = self._refs_under[tokens] = found
        return hit

    def reach(self, target: tuple) -> frozenset:
        """Every ref target reachable (through one or more refs) from the subschema at `target`."""
        hit = self._reach.get(target)
        if hit is None:
            seen: set = set()
            todo = list(self._refs_in(target))
            while todo:
                t = todo.pop()
                if t not in seen:
                    seen.add(t)
                    todo.extend(self._refs_in(t))
            hit = self._reach[target] = frozenset(seen)
        return hit


# Objects and arrays a schema may nest (JSON levels; a schema level is usually two: a schema inside `properties`).
# Real schemas nest a few dozen; past this the schema is refused up front, before anything recurses over it (json,
# the compiler, the disk cache's pickling), where ~250 levels raised RecursionError.
MAX_SCHEMA_NESTING = 128


def check_json_values(value) -> None:
    """InvalidSchemaError, naming where, at the first place a schema nests deeper than MAX_SCHEMA_NESTING or holds a
    number JSON cannot represent (json.loads reads 1e400 as inf). Iterative: no recursion."""
    stack = [(value, (), 0)]
    while stack:
        v, path, depth = stack.pop()
        if depth > MAX_SCHEMA_NESTING:
            raise InvalidSchemaError(f"schema nests deeper than {MAX_SCHEMA_NESTING} objects/arrays", pointer_str(path))
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidSchemaError(f"{v!r} is not a JSON number (out of range, e.g. 1e400)", pointer_str(path))
        if isinstance(v, dict):
            stack.extend((x, path + (k,), depth + 1) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, path + (i,), depth + 1) for i, x in enumerate(v))


# ------------------------------------------------------------------------------------------ prepare
def _number(v, key: str, where: str) -> Fraction:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidSchemaError(f"'{key}' must be a number", where)
    return Fraction(v) if isinstance(v, int) else Fraction(repr(v))


def value_key(v):
    """A hashable key under which JSON values are equal iff JSON Schema calls them equal (1 == 1.0)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return (type(v).__name__, v)
    if isinstance(v, (int, float)):
        return ("num", Fraction(v) if isinstance(v, int) else Fraction(repr(v)))
    if isinstance(v, list):
        return ("list", tuple(value_key(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, value_key(x)) for k, x in v.items())))
    return ("other", json.dumps(v, sort_keys=True, default=str))


def prepare(schema: dict, where: str) -> dict:
    """A 2020-12-spelled copy of one subschema (not its children), with `__src`."""
    s = dict(schema)
    s.setdefault("__src", [schema])
    if "const" in s:
        c = s.pop("const")
        if "enum" in s:
            s["enum"] = [v for v in s["enum"] if value_key(v) == value_key(c)] if isinstance(s["enum"], list) else s["enum"]
        else:
            s["enum"] = [c]
    if "enum" in s and not isinstance(s["enum"], list):
        raise InvalidSchemaError("'enum' must be an array", where)
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(s.get(key), bool):  # draft-04: a flag on minimum / maximum
            flag = s.pop(key)
            if flag and bound in s:
                s[key] = s.pop(bound)
    if isinstance(s.get("items"), list):  # draft-04..2019 tuple form
        s["prefixItems"] = s.pop("items")
        if "additionalItems" in s:
            s["items"] = s.pop("additionalItems")
    else:
        s.pop("additionalItems", None)  # ignored unless items is an array
    if "type" in s:
        t = s["type"]
        ts = [t] if isinstance(t, str) else t
        if not isinstance(ts, list) or not all(isinstance(x, str) and x in TYPES for x in ts):
            raise InvalidSchemaError(f"bad 'type' {t!r}", where)
        s["type"] = list(dict.fromkeys(ts))
    if s.get("nullable") is True and "type" in s and "null" not in s["type"]:
        s["type"] = s["type"] + ["null"]
    if "dependencies" in s:
        _split_dependencies(s, where)
    _check_shapes(s, where)
    return s


def _split_dependencies(s: dict, where: str) -> None:
    """Draft-07 `dependencies` -> `dependentRequired` (its arrays) and `dependentSchemas` (its schemas), next to any
    of those the schema also has (both hold then)."""
    deps = s.pop("dependencies")
    if not isinstance(deps, dict):
        raise InvalidSchemaError("'dependencies' must be an object", where)
    required, schemas = s.get("dependentRequired", {}), s.get("dependentSchemas", {})
    if not isinstance(required, dict) or not isinstance(schemas, dict):
        raise InvalidSchemaError("'dependentRequired' / 'dependentSchemas' must be objects", where)
    required, schemas = dict(required), dict(schemas)
    for name, dep in deps.items():
        if isinstance(dep, list):
            required[name] = list(dict.fromkeys(required.get(name, []) + dep)) if name in required else dep
        elif isinstance(dep, (dict, bool)):
            schemas[name] = _all_of(schemas[name], dep) if name in schemas else dep
        else:
            raise InvalidSchemaError("a 'dependencies' value must be an array of names or a schema", where)
    if required:
        s["dependentRequired"] = required
    if schemas:
        s["dependentSchemas"] = schemas


_COUNT_KEYS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_NUMBER_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_SCHEMA_KEYS = ("items", "additionalProperties", "not", "propertyNames")
_LIST_KEYS = ("allOf", "anyOf", "oneOf")


def _check_shapes(s: dict, where: str) -> None:
    """InvalidSchemaError for a keyword whose value has the wrong JSON type, before `merge` or the compiler combine
    it with another (`{"allOf": [{"properties": 5}, {"properties": {}}]}` raised TypeError there)."""
    for key in _COUNT_KEYS:
        v = s.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                              or (isinstance(v, float) and not v.is_integer())):
            raise InvalidSchemaError(f"'{key}' must be a non-negative integer", where)
    for key in _NUMBER_KEYS:
        v = s.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InvalidSchemaError(f"'{key}' must be a number", where)
    for key in ("properties", "patternProperties"):
        if key in s and not isinstance(s[key], dict):
            raise InvalidSchemaError(f"'{key}' must be an object", where)
    for key in _SCHEMA_KEYS:
        if key in s and not isinstance(s[key], (dict, bool)):
            raise InvalidSchemaError(f"'{key}' must be a schema (an object or a boolean)", where)
    for key in _LIST_KEYS:
        if key in s and (not isinstance(s[key], list) or not s[key]):
            raise InvalidSchemaError(f"'{key}' must be a non-empty array", where)
    if "prefixItems" in s and not isinstance(s["prefixItems"], list):
        raise InvalidSchemaError("'prefixItems' must be an array", where)
    if "required" in s and (not isinstance(s["required"], list) or not all(isinstance(r, str) for r in s["required"])):
        raise InvalidSchemaError("'required' must be an array of strings", where)
    if "pattern" in s and not isinstance(s["pattern"], str):
        raise InvalidSchemaError("'pattern' must be a string", where)
    dr = s.get("dependentRequired")
    if dr is not None and (not isinstance(dr, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in dr.values())):
        raise InvalidSchemaError("'dependentRequired' must be an object of arrays of strings", where)
    ds = s.get("dependentSchemas")
    if ds is not None and (not isinstance(ds, dict) or not all(isinstance(v, (dict, bool)) for v in ds.values())):
        raise InvalidSchemaError("'dependentSchemas' must be an object of schemas", where)
    pp = s.get("patternProperties")
    if isinstance(pp, dict) and not all(isinstance(v, (dict, bool)) for v in pp.values()):
        raise InvalidSchemaError("'patternProperties' values must be schemas", where)


# -------------------------------------------------------------------------------------------- merge
_MIN_KEYS = ("minLength", "minItems", "minProperties")
_MAX_KEYS = ("maxLength", "maxItems", "maxProperties")
_SCHEMA_MAP_KEYS = ("properties",)


def _all_of(a, b):
    if a is True or a == {}:
        return b
    if b is True or b == {}:
        return a
    if a is False or b is False:
        return False
    return {"allOf": [a, b]}


_LAYER_KEYS = ("properties", "patternProperties", "additionalProperties")


def _key_layers(x: dict) -> list[dict]:
    """x's (properties, patternProperties, additionalProperties) as a layer, then the layers merges kept in it."""
    own = {k: x[k] for k in _LAYER_KEYS if k in x}
    return ([own] if own else []) + list(x.get("__layers", ()))


def _without_orphan_conditions(x: dict) -> dict:
    """x without an `if` that has no `then`/`else`, or `then`/`else` with no `if`: they assert nothing, and merged
    with another schema's halves (allOf [{if}, {then}, {else}]) they would wrongly make one condition."""
    has_if = "if" in x
    has_branch = "then" in x or "else" in x
    if has_if == has_branch:
        return x
    return {k: v for k, v in x.items() if k not in ("if", "then", "else")}


def _condition(x: dict) -> dict:
    return {k: x[k] for k in ("if", "then", "else") if k in x}


def _defer_second_applicators(a: dict, b: dict) -> dict:
    """b with its `if`/`then`/`else` moved to `__conds` and its `oneOf` to `__oneofs` where a has a different one.

    NOTE: allOf [{if A then B}, {if C then D}] (and two oneOfs) is common in real schemas; the two cannot be folded
    into one keyword, so the second waits in a list and compiler.flat applies it once the first is compiled (each is
    its own case split / exactly-one group over the same value)."""
    if "if" in a and "if" in b and _condition(a) != _condition(b):
        cond = _condition(b)
        b = {k: v for k, v in b.items() if k not in ("if", "then", "else")}
        b["__conds"] = [cond] + list(b.get("__conds", []))
    if "oneOf" in a and "oneOf" in b and a["oneOf"] != b["oneOf"]:
        branches = b["oneOf"]
        b = {k: v for k, v in b.items() if k != "oneOf"}
        b["__oneofs"] = [branches] + list(b.get("__oneofs", []))
    return b


def merge(a: dict, b: dict, where: str) -> dict:
    """One dict equivalent to allOf [a, b] (both prepared, without $ref / allOf).

    NOTE: each schema's additionalProperties applies to the keys *it* does not name. Folding b's properties into a's
    (with the other side's additionalProperties) says that exactly while no patternProperties is involved; once one
    is, the two key layers stay apart in `__layers` (compiler.object answers a key to every layer)."""
    a, b = _without_orphan_conditions(a), _without_orphan_conditions(b)
    b = _defer_second_applicators(a, b)
    la, lb = _key_layers(a), _key_layers(b)
    if any("patternProperties" in lay for lay in la + lb):
        out = merge({k: v for k, v in a.items() if k not in _LAYER_KEYS and k != "__layers"},
                    {k: v for k, v in b.items() if k not in _LAYER_KEYS and k != "__layers"}, where)
        out["__layers"] = la + lb
        return out
    out = dict(a)
    out["__src"] = a.get("__src", []) + b.get("__src", [])
    a_extra, b_extra = a.get("additionalProperties", True), b.get("additionalProperties", True)
    for key, bv in b.items():
        if key == "__src":
            continue
        if key not in out:
            out[key] = bv
            continue
        av = out[key]
        if key == "type":
            out[key] = [t for t in av if t in bv or (t == "integer" and "number" in bv)] + \
                       [t for t in bv if t == "integer" and "number" in av and t not in av]
        elif key == "enum":
            keys = {value_key(v) for v in bv}
            out[key] = [v for v in av if value_key(v) in keys]
        elif key == "required":
            out[key] = list(dict.fromkeys(list(av) + list(bv)))
        elif key in _MIN_KEYS or key == "minimum":
            out[key] = max(av, bv)
        elif key in _MAX_KEYS or key == "maximum":
            out[key] = min(av, bv)
        elif key == "exclusiveMinimum":
            out[key] = max(av, bv)
        elif key == "exclusiveMaximum":
            out[key] = min(av, bv)
        elif key == "pattern":
            if av != bv:
                out["__patterns"] = out.get("__patterns", []) + [bv]
        elif key in ("__patterns", "__conds", "__oneofs"):
            out[key] = av + bv
        elif key in ("additionalProperties", "items"):
            out[key] = _all_of(av, bv)
        elif key == "anyOf":
            product = [{"allOf": [x, y]} for x in av for y in bv]
            if len(product) > MAX_ANYOF_PRODUCT:
                raise ConstraintTooComplexError(f"anyOf combinations in allOf at {where}", MAX_ANYOF_PRODUCT)
            out[key] = product
        elif key == "multipleOf":
            if av != bv:
                if isinstance(av, int) and isinstance(bv, int) and not isinstance(av, bool) and not isinstance(bv, bool):
                    out[key] = math.lcm(av, bv)
                else:
                    # NOTE: kept apart, not replaced by their lcm: jsonschema tests each float divisor in floating
                    # point (numbers.multiple_of takes the lcm and mirrors that test)
                    out["__multiples"] = out.get("__multiples", []) + [bv]
        elif key == "__multiples":
            out[key] = av + bv
        elif key == "properties":
            props = dict(av)
            for name, sub in bv.items():
                props[name] = _all_of(props[name], sub) if name in props else _all_of(sub, a_extra)
            for name in av:
                if name not in bv:
                    props[name] = _all_of(av[name], b_extra)
            out[key] = props
        elif key == "dependentRequired":
            out[key] = {**av, **{t: list(dict.fromkeys(list(av.get(t, [])) + list(ds))) for t, ds in bv.items()}}
        elif key == "dependentSchemas":
            out[key] = {**av, **{t: _all_of(av[t], sub) if t in av else sub for t, sub in bv.items()}}
        elif key == "propertyNames":
            out[key] = _all_of(av, bv)
        elif key == "__forbidden":
            out[key] = list(dict.fromkeys(list(av) + list(bv)))
        elif key in ("not", "__nots"):
            if av != bv:
                out["__nots"] = out.get("__nots", []) + ([bv] if key == "not" else bv)
        elif key == "prefixItems":
            if av != bv:
                raise UnsupportedSchemaError("prefixItems", where, "two different tuple forms in allOf")
        elif av != bv and not _is_annotation(key) and (key in VOCABULARY or key.startswith("__")):
            raise UnsupportedSchemaError(key, where, "cannot combine two different values in allOf")
        # NOTE: any other key is not JSON Schema (`"translation"`, `"@type"`): validators ignore it, so do we
    if "properties" in b and "properties" not in a and a_extra is not True:
        out["properties"] = {n: _all_of(sub, a_extra) for n, sub in b["properties"].items()}
    if "properties" in a and "properties" not in b and b_extra is not True:
        out["properties"] = {n: _all_of(sub, b_extra) for n, sub in a["properties"].items()}
    if "prefixItems" in a and "prefixItems" not in b and "items" in b:
        out["prefixItems"] = [_all_of(x, b["items"]) for x in a["prefixItems"]]
    if "prefixItems" in b and "prefixItems" not in a and "items" in a:
        out["prefixItems"] = [_all_of(x, a["items"]) for x in b["prefixItems"]]
    return out


# The keywords of JSON Schema (2020-12 and the draft-04/07 spellings) that say anything about a value.
VOCABULARY = frozenset({
    "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
    "minLength", "pattern", "format", "maxItems", "minItems", "uniqueItems", "maxContains", "minContains",
    "maxProperties", "minProperties", "required", "dependentRequired", "allOf", "anyOf", "oneOf", "not", "if", "then",
    "else", "dependentSchemas", "dependencies", "prefixItems", "items", "additionalItems", "contains", "properties",
    "patternProperties", "additionalProperties", "propertyNames", "unevaluatedItems", "unevaluatedProperties", "$ref",
    "$dynamicRef", "$recursiveRef",
})
ANNOTATIONS = frozenset({
    "title", "description", "examples", "example", "default", "$comment", "$schema", "$id", "id", "deprecated",
    "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "contentSchema", "$anchor", "$defs",
    "definitions", "$vocabulary", "$dynamicAnchor", "$recursiveAnchor", "nullable", "discriminator",
    "markdownDescription", "enumDescriptions", "externalDocs", "xml", "__src",
})


def _is_annotation(key: str) -> bool:
    return key in ANNOTATIONS or key.startswith("x-")
