"""`not`, `if`/`then`/`else`, overlapping `oneOf` and `contains` (structgen/fsm/json_schema/combine.py, contains.py):
random walks through the automaton decode to JSON that jsonschema accepts, and instances near the boundary are
accepted exactly when jsonschema accepts them (a differential test over hand-picked and generated values)."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
from automaton_helpers import accepts, random_walk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structgen.errors import ConstraintError
from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.json_schema.combine import Combine, Term
from structgen.fsm.json_schema.nodes import NEVER, literal

SCHEMAS = {
    "not_enum": {"type": "string", "maxLength": 3, "not": {"enum": ["a", "bb"]}},
    "not_required_pair": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                          "not": {"required": ["a", "b"]}},
    "not_const_number": {"type": "number", "minimum": 0, "maximum": 3, "not": {"const": 1}},
    "oneOf_overlap": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "string", "pattern": "^a"}]},
    "oneOf_objects": {"type": "object", "properties": {"kind": {"enum": ["x", "y"]}, "n": {"type": "integer"}},
                      "required": ["kind"],
                      "oneOf": [{"properties": {"kind": {"const": "x"}}}, {"required": ["n"]}]},
    "if_then_else": {"type": "object", "properties": {"country": {"enum": ["US", "CA"]},
                                                      "zip": {"type": "string", "maxLength": 6}},
                     "required": ["country", "zip"],
                     "if": {"properties": {"country": {"const": "US"}}},
                     "then": {"properties": {"zip": {"pattern": "^[0-9]{5}$"}}},
                     "else": {"properties": {"zip": {"pattern": "^[A-Z][0-9][A-Z] ?[0-9][A-Z][0-9]$"}}}},
    "contains_min_max": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                         "contains": {"minimum": 5}, "minContains": 2, "maxContains": 3, "maxItems": 6},
    "contains_prefix": {"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "boolean"},
                        "contains": {"const": True}},
}


def _validator(schema):
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("extra", [False, True], ids=["strict", "spec"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_walks_validate(name, extra):
    schema = SCHEMAS[name]
    a = schema_automaton(schema, extra_properties=extra)
    v = _validator(schema)
    rng = random.Random(f"{name}:{extra}")
    for _ in range(40):
        text = random_walk(a, rng).decode("utf-8")
        value = json.loads(text)
        assert v.is_valid(value), (name, text)


NEAR = {
    "not_enum": ['"a"', '"bb"', '"b"', '"ab"', '"\\u0061"', '"abcd"', '""'],
    "not_const_number": ["1", "1.0", "1.00", "0.5", "2", "3", "3.5", "-1"],
    "oneOf_overlap": ['"a"', '"ab"', '"abcd"', '"b"', '"bcd"', '"bcde"', '""'],
    "oneOf_objects": ['{"kind":"x"}', '{"kind":"x","n":1}', '{"kind":"y","n":1}', '{"kind":"y"}'],
    "if_then_else": ['{"country":"US","zip":"12345"}', '{"country":"US","zip":"K1A0B1"}',
                     '{"country":"CA","zip":"K1A 0B1"}', '{"country":"CA","zip":"12345"}'],
    "contains_min_max": ["[]", "[5]", "[5,6]", "[5,6,7]", "[5,6,7,8]", "[1,5,2,6]", "[1,2,3]"],
    "contains_prefix": ['["a"]', '["a",true]', '["a",false]', '["a",false,true]', '[]'],
}


@pytest.mark.parametrize("name", sorted(NEAR))
def test_near_instances_match_jsonschema(name):
    schema = SCHEMAS[name]
    a = schema_automaton(schema, extra_properties=True)
    v = _validator(schema)
    for text in NEAR[name]:
        assert accepts(a, text) == v.is_valid(json.loads(text)), (name, text)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.sampled_from([0.5, 1.0, 2.5, 7.0]),
                     st.sampled_from(["", "a", "ab", "abc", "b", "US", "x"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.sampled_from(["a", "b", "kind", "n"]),
                                                                         inner, max_size=3)), max_leaves=6)
DIFFERENTIAL = {
    "not_object": {"not": {"type": "object", "required": ["a"]}},
    "not_anyof": {"type": ["integer", "string"], "not": {"anyOf": [{"type": "string", "maxLength": 1},
                                                                   {"type": "integer", "maximum": 2}]}},
    "oneOf_types": {"oneOf": [{"type": ["integer", "string"]}, {"type": ["string", "boolean"]}]},
    "if_types": {"if": {"type": "integer"}, "then": {"minimum": 3}, "else": {"type": ["string", "null"]}},
    "contains_any": {"type": "array", "contains": {"type": "string"}, "maxContains": 1},
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, name=st.sampled_from(sorted(DIFFERENTIAL)))
def test_differential_against_jsonschema(value, name):
    schema = DIFFERENTIAL[name]
    a = _automaton(name)
    # NOTE: json.dumps writes an integral float as 7.0; JSON Schema reads it as the integer 7, and our language writes
    # integers without a fraction (as the carrier of `type: integer` does), so the text is that of the same value 7.
    text = json.dumps(_integral_floats_as_ints(value), separators=(",", ":"))
    assert accepts(a, text) == _validator(schema).is_valid(value), (name, text)


_AUTOMATA: dict = {}


def _integral_floats_as_ints(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, list):
        return [_integral_floats_as_ints(x) for x in v]
    if isinstance(v, dict):
        return {k: _integral_floats_as_ints(x) for k, x in v.items()}
    return v


def _automaton(name):
    if name not in _AUTOMATA:
        _AUTOMATA[name] = schema_automaton(DIFFERENTIAL[name], extra_properties=True)
    return _AUTOMATA[name]


def test_combine_never_when_no_value_satisfies():
    # (A final and A not final) can never hold: the node is NEVER, not a node with dead-end states.
    a = literal("1")
    assert Combine.build([a, a], [Term(final=frozenset({0}), not_final=frozenset({1}))], "test") is NEVER


def test_min_bytes_of_combination_is_a_real_completion():
    schema = {"type": "string", "not": {"enum": ["", "a", "b"]}}
    a = schema_automaton(schema)
    assert a.min_bytes_to_final(a.initial()) == 3  # '"c"': one character that is not a listed value


@pytest.mark.parametrize("schema, keyword", [
    ({"not": {"type": "string", "format": "email"}}, "format"),
    ({"not": {"type": "string", "pattern": "^\\d+$"}}, "pattern"),
    ({"not": {"type": "array", "uniqueItems": True}}, "uniqueItems"),
])
def test_conditions_refuse_what_they_cannot_judge_exactly(schema, keyword):
    with pytest.raises(ConstraintError) as e:
        schema_automaton(schema, extra_properties=True)
    assert getattr(e.value, "keyword", None) == keyword


def test_condition_integer_is_by_value():
    # 1.0 is an integer in JSON Schema: not-integer must reject it in every spelling the carrier may write.
    a = schema_automaton({"type": "number", "maximum": 5, "not": {"type": "integer"}})
    for text, ok in (("1", False), ("1.0", False), ("1.00", False), ("1.5", True), ("-0.0", False)):
        assert accepts(a, text) == ok, text
