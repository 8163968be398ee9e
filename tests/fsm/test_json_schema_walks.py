"""Property test: random byte walks through a schema automaton, biased to finish, always decode to JSON that
validates against the schema (jsonschema, with format checking) — for a variety of schemas."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import jsonschema
import pytest
from automaton_helpers import accepts, number_schema, random_walk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.json_schema.numbers import MAX_DIGITS

SCHEMAS = {
    "nested_objects": {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string",
                    "pattern": "^[0-9]{5}$"}}, "required": ["city"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 130}}, "required": ["name", "address"]},
    "arrays": {"type": "array", "items": {"type": "array", "items": {"type": "number", "minimum": -1.5,
               "exclusiveMaximum": 2}, "maxItems": 3}, "minItems": 1, "maxItems": 4},
    "tuple": {"type": "array", "prefixItems": [{"type": "string", "format": "date"}, {"type": "boolean"}],
              "items": {"type": "integer", "multipleOf": 4}},
    "enums": {"type": "object", "properties": {"color": {"enum": ["red", "grün", {"rgb": [1, 2, 3]}, None]},
                                               "k": {"const": 3.5}}, "required": ["color"]},
    "any_of": {"anyOf": [{"type": "string", "format": "email"}, {"type": "integer", "exclusiveMinimum": 100},
                         {"type": "array", "items": {"$ref": "#/anyOf/0"}, "maxItems": 2}]},
    "one_of_tagged": {"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "number"}}, "required": ["kind"]},
        {"type": "object", "properties": {"kind": {"const": "b"}, "y": {"type": "string", "format": "uuid"}},
         "required": ["kind", "y"]}]},
    "formats": {"type": "object", "properties": {f: {"type": "string", "format": f} for f in
                ["date-time", "time", "ipv4", "ipv6", "hostname", "uri"]}},
    "patterns_non_ascii": {"type": "object", "properties": {
        "city": {"type": "string", "pattern": "^(Zürich|São Paulo|東京)$"},
        "note": {"type": "string", "pattern": "ß", "maxLength": 6},
        "free": {"type": "string", "maxLength": 4}}, "required": ["city", "note", "free"]},
    "recursive": {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "children": {
        "type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}, "required": ["v"]}},
        "$ref": "#/$defs/node"},
    "all_of": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer", "minimum": 5}},
                          "required": ["a"]},
                         {"properties": {"a": {"maximum": 9}, "b": {"type": "null"}}}]},
    "any_value": {"type": "object", "properties": {"payload": {}}, "required": ["payload"]},
    "draft04": {"$schema": "http://json-schema.org/draft-04/schema#", "definitions": {
        "pos": {"type": "number", "minimum": 0, "exclusiveMinimum": True}},
        "type": "array", "items": [{"$ref": "#/definitions/pos"}], "additionalItems": {"type": "string"}},
    "min_max_props": {"type": "object", "properties": {k: {"type": "boolean"} for k in "abcde"},
                      "minProperties": 2, "maxProperties": 3},
    "extra_properties": {"type": "object", "properties": {"id": {"type": "integer"}},
                         "additionalProperties": {"type": "string", "maxLength": 3}},
}


def _validator(schema):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


_AUTOMATA: dict = {}


def _automaton(name, **options):
    key = (name, tuple(sorted(options.items())))
    if key not in _AUTOMATA:
        _AUTOMATA[key] = schema_automaton(SCHEMAS[name], **options)
    return _AUTOMATA[key]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), flexible=st.booleans())
def test_random_walks_validate(name, seed, flexible):
    a = _automaton(name, whitespace="flexible" if flexible else "compact")
    text = random_walk(a, random.Random(seed), max_bytes=150).decode("utf-8")
    value = json.loads(text)
    errors = list(_validator(SCHEMAS[name]).iter_errors(value))
    assert not errors, (text, [e.message for e in errors])


_BOUNDS = st.one_of(st.none(), st.integers(-10**6, 10**6),
                    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
                    st.floats(-1e6, 1e6, allow_nan=False))


def _writable_in_range(lo, hi, lo_excl, hi_excl, integer) -> bool:
    """Whether the range holds a number the automaton's language can write: at most MAX_DIGITS (15) significant
    digits (json_schema/numbers.py), i.e. a multiple of 10**(e - 14) for the larger bound's magnitude 10**e (below
    1: of 10**-15). A range only narrower than that (e.g. [-2.2e-309, 0)) is refused by design, with a clear error."""
    top = max(abs(lo), abs(hi))
    exp = math.floor(math.log10(top)) if top >= 1 else 0
    step = Fraction(10) ** (exp - (MAX_DIGITS - 1)) if top >= 1 else Fraction(1, 10**MAX_DIGITS)
    if integer:
        step = max(step, Fraction(1))
    lo_f, hi_f = Fraction(lo), Fraction(hi)
    n = math.ceil(lo_f / step)
    if lo_excl and n * step == lo_f:
        n += 1
    return n * step < hi_f or (not hi_excl and n * step == hi_f)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lo=_BOUNDS, hi=_BOUNDS, lo_excl=st.booleans(), hi_excl=st.booleans(), integer=st.booleans(),
       seed=st.integers(0, 2**32 - 1), probes=st.lists(st.floats(-2e6, 2e6, allow_nan=False), max_size=8))
def test_number_bounds_never_admit_out_of_range(lo, hi, lo_excl, hi_excl, integer, seed, probes):
    """Exact bounds: neither random walks nor probe values near/at the bounds ever give an invalid number."""
    schema = number_schema(integer, lo, hi, lo_excl, hi_excl)
    try:
        a = schema_automaton(schema)
    except Exception as e:  # a range holding no writable number is the only acceptable refusal
        assert lo is not None and hi is not None and not _writable_in_range(lo, hi, lo_excl, hi_excl, integer), \
            (schema, e)
        return
    validator = _validator(schema)
    rng = random.Random(seed)
    for _ in range(5):
        text = random_walk(a, rng, max_bytes=12).decode()
        assert validator.is_valid(json.loads(text)), (schema, text)
    for x in probes + [lo or 0, hi or 0]:
        for text in {json.dumps(x), json.dumps(int(x)) if abs(x) < 1e15 else "0"}:
            if accepts(a, text):
                assert validator.is_valid(json.loads(text)), (schema, text)
