"""Several `if`s and `oneOf`s under one allOf: the discriminated case split (discriminated.py) and the general path
that applies one condition after another (normalize._defer_second_applicators, compiler._next_deferred)."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
from automaton_helpers import accepts, random_walk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structgen.errors import ConstraintTooComplexError
from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.json_schema.discriminated import discriminated_cases

# the tagged-union form real schemas use: allOf [{if kind == a then A}, {if kind == b then B}, ...]
TAGGED = {
    "type": "object",
    "properties": {"kind": {"enum": ["a", "b", "c", "d"]}, "n": {"type": "integer"}, "s": {"type": "string",
                                                                                          "maxLength": 3}},
    "allOf": [
        {"if": {"properties": {"kind": {"const": "a"}}}, "then": {"required": ["n"]}},
        {"if": {"properties": {"kind": {"const": "b"}}, "required": ["kind"]}, "then": {"required": ["s"]},
         "else": {"properties": {"s": {"maxLength": 1}}}},
        {"if": {"properties": {"kind": {"const": "c"}}}, "then": {"properties": {"n": {"minimum": 5}}}},
    ],
}
# not one key against constants: the general path, one condition after the other
GENERAL = {
    "type": "object",
    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
    "allOf": [
        {"if": {"properties": {"x": {"minimum": 3}}}, "then": {"required": ["y"]}},
        {"if": {"required": ["y"]}, "then": {"properties": {"x": {"maximum": 6}}}},
    ],
}
TWO_ONE_OFS = {
    "type": "object",
    "properties": {"p": {"type": "integer"}, "q": {"type": "integer"}},
    "allOf": [{"oneOf": [{"required": ["p"]}, {"required": ["q"]}]},
              {"oneOf": [{"properties": {"p": {"maximum": 2}}}, {"properties": {"p": {"minimum": 5}}}]}],
}
SCHEMAS = {"tagged": TAGGED, "general": GENERAL, "two_oneofs": TWO_ONE_OFS}


def _validator(schema):
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


_AUTOMATA: dict = {}


def _automaton(name):
    # NOTE: strict mode (no undeclared keys): the instances below use the declared keys only
    if name not in _AUTOMATA:
        _AUTOMATA[name] = schema_automaton(SCHEMAS[name], property_order="any")
    return _AUTOMATA[name]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_walks_validate(name):
    a, v = _automaton(name), _validator(SCHEMAS[name])
    rng = random.Random(name)
    for _ in range(40):
        text = random_walk(a, rng).decode("utf-8")
        assert v.is_valid(json.loads(text)), (name, text)


def _values(name):
    keys = sorted(SCHEMAS[name]["properties"])
    return st.one_of(st.dictionaries(st.sampled_from(keys), st.one_of(
        st.sampled_from(["a", "b", "c", "d", "", "xy", "abcd"]), st.integers(-1, 8)), max_size=3),
        st.sampled_from([None, 3, "a", [], True]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(SCHEMAS)))
def test_differential_against_jsonschema(data, name):
    value = data.draw(_values(name))
    text = json.dumps(value, separators=(",", ":"))
    assert accepts(_automaton(name), text) == _validator(SCHEMAS[name]).is_valid(value), (name, text)


@pytest.mark.parametrize("text, valid", [
    ('{"kind":"a","n":1}', True), ('{"kind":"a"}', False),                       # a needs n
    ('{"kind":"b","s":"xyz"}', True), ('{"kind":"b"}', False),                   # b needs s, long s allowed
    ('{"kind":"c","n":5,"s":"x"}', True), ('{"kind":"c","n":4}', False),          # c: n >= 5; s <= 1 (b's else)
    ('{"kind":"d","s":"xy"}', False), ('{"kind":"d","s":"x"}', True),             # no tag matches: every else
    ('{"n":5}', True), ('{"s":"x"}', False),                                      # no kind: a and c hold (n)
])
def test_tagged_cases(text, valid):
    assert accepts(_automaton("tagged"), text) is valid
    assert _validator(TAGGED).is_valid(json.loads(text)) is valid


def test_only_one_key_against_distinct_constants_is_a_case_split():
    tag = lambda k, v: {"if": {"properties": {k: {"const": v}}}, "then": {"required": ["z"]}}  # noqa: E731
    assert discriminated_cases([tag("t", 1), tag("t", 2)]) is not None
    assert discriminated_cases([tag("t", 1), tag("u", 2)]) is None        # two keys
    assert discriminated_cases([tag("t", 1), tag("t", 1.0)]) is None      # the same constant (1 == 1.0)
    assert discriminated_cases([tag("t", 1)]) is None                     # one condition: the plain if
    assert discriminated_cases([{"if": {"properties": {"t": {"minimum": 1}}}}, tag("t", 2)]) is None


def test_many_general_conditions_are_refused_as_too_complex():
    conds = [{"if": {"properties": {f"k{i}": {"minimum": i}}}, "then": {"required": [f"k{i}"]}} for i in range(5)]
    with pytest.raises(ConstraintTooComplexError, match="'if' conditions combined by allOf"):
        schema_automaton({"type": "object", "allOf": conds})
