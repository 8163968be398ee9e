"""Several `if`/`then`/`else` on one object that all test the same key against constants, as a plain case split.

Real schemas write a tagged union as allOf [{if: {properties: {type: {const: "a"}}}, then: A}, {if: ... "b" ...,
then: B}, ...]. Compiled one condition at a time, k of them make 2^k cases, each a side-by-side test. But the
conditions here exclude each other (the key has one value), so the value space splits into k + 3 plain cases:
- the key present with constant c_i: then_i, and else_j for every other condition;
- the key present with none of the constants: every else_j;
- the key absent: a condition with `required: [key]` fails (its else), one without holds vacuously (its then);
- not an object at all: `properties`/`required` hold vacuously, every then_i.
Each case is one schema for allOf-merging into the rest: no tests run side by side, no search for a value.
"""

from __future__ import annotations

from .normalize import _is_annotation, value_key

NON_OBJECT_TYPES = ["null", "boolean", "integer", "number", "string", "array"]


def _discriminator(cond: dict):
    """(key, constant, needs the key) when `cond["if"]` tests only one key against one constant, else None."""
    test = cond.get("if")
    if not isinstance(test, dict):
        return None
    if any(k not in ("properties", "required", "type") and not _is_annotation(k) for k in test):
        return None
    if test.get("type", "object") not in ("object", ["object"]):
        return None
    props = test.get("properties")
    if not isinstance(props, dict) or len(props) != 1:
        return None
    (key, sub), = props.items()
    if not isinstance(sub, dict):
        return None
    if "const" in sub:
        value = sub["const"]
    elif isinstance(sub.get("enum"), list) and len(sub["enum"]) == 1:
        value = sub["enum"][0]
    else:
        return None
    if any(k not in ("const", "enum", "type") and not _is_annotation(k) for k in sub):
        return None
    if "type" in sub and sub["type"] not in (_json_type(value), [_json_type(value)]):
        return None  # a type that the constant does not have makes the test false: not this simple form
    required = test.get("required", [])
    if required not in ([], [key]):
        return None
    # NOTE: "type": "object" in the if makes it false for non-objects; then non-objects take the else branches
    return key, value, bool(required), "type" in test


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def discriminated_cases(conds: list[dict]) -> list[list] | None:
    """The case split of `conds` (each {"if", "then"?, "else"?}) as lists of schemas to allOf together, or None
    when they are not all tests of one key against distinct constants."""
    tags = [_discriminator(c) for c in conds]
    if len(conds) < 2 or any(t is None for t in tags):
        return None
    key = tags[0][0]
    if any(t[0] != key for t in tags):
        return None
    values = [value_key(t[1]) for t in tags]
    if len(set(values)) != len(values):
        return None
    then_ = [c.get("then", True) for c in conds]
    else_ = [c.get("else", True) for c in conds]
    cases = []
    for i, (_, value, _, _) in enumerate(tags):
        cases.append([{"type": "object", "required": [key], "properties": {key: {"const": value}}}, then_[i],
                      *(else_[j] for j in range(len(conds)) if j != i)])
    cases.append([{"type": "object", "required": [key],
                   "properties": {key: {"not": {"enum": [t[1] for t in tags]}}}}, *else_])
    cases.append([{"type": "object", "__forbidden": [key]},
                  *(else_[i] if needs_key else then_[i] for i, (_, _, needs_key, _) in enumerate(tags))])
    cases.append([{"type": NON_OBJECT_TYPES},
                  *(else_[i] if typed else then_[i] for i, (_, _, _, typed) in enumerate(tags))])
    return cases
