"""structgen/fsm/json_schema/lengths.py and the closed-form exit costs of the counting nodes (strings, arrays,
objects) and of numbers: the same numbers as the byte-by-byte search they replace, and cheap for any length up to
LENGTH_HORIZON (or any bound a number may have)."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
from automaton_helpers import accepts, assert_exit_costs_agree, number_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from structgen.errors import UnsupportedSchemaError
from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.json_schema.compiler import Compiler
from structgen.fsm.json_schema.lengths import LENGTH_HORIZON, char_cost
from structgen.fsm.json_schema.matcher import SchemaAutomaton


def both(schema, extra_properties: bool = False, whitespace: str = "compact"):
    """The schema's automaton with closed-form exit costs, and one that searches frame by frame (the oracle)."""
    def make(closed: bool):
        root = Compiler(schema, extra_properties=extra_properties, whitespace=whitespace,
                        max_recursion_depth=3).compile()
        return SchemaAutomaton(root, max_states=1_000_000, closed_forms=closed)
    return make(True), make(False)


SCHEMAS = [
    {"type": "string", "minLength": 5},
    {"type": "string", "minLength": 3, "maxLength": 6, "pattern": "^(ab|c)+$"},
    {"type": "string", "minLength": 4, "pattern": "^[é-ë]+$"},  # 2-byte characters
    {"type": "string", "minLength": 2, "maxLength": 9, "pattern": '^["\\\\]+x?$'},  # \" and \\ cost 2
    {"type": "string", "minLength": 3, "pattern": "^[\\n\\t\x01]*$"},  # escapes: 2 bytes, \u0001: 6
    {"type": "string", "minLength": 2, "pattern": "^(😀|ab)+$"},  # 4 bytes or a pair of ASCII
    {"type": "string", "minLength": 4, "pattern": "(é|ab)+"},  # search semantics: anything around
    {"type": "string", "maxLength": 12, "format": "date"},
    {"type": "array", "minItems": 4, "items": {"type": "string", "minLength": 2}},
    {"type": "array", "minItems": 5, "maxItems": 7, "prefixItems": [{"const": "long-first-item"}, {"type": "integer"}]},
    {"type": "array", "minItems": 1, "prefixItems": [{"type": "boolean"}, {"type": "null"}], "items": False},
    {"type": "object", "minProperties": 1, "additionalProperties": {"type": "integer"}},
    {"type": "object", "minProperties": 3, "properties": {"zz": {"type": "string", "minLength": 3}, "a": {"const": 1}},
     "additionalProperties": {"type": "boolean"}},
    {"type": "object", "minProperties": 2, "maxProperties": 3, "properties": {"k": {"type": "null"}},
     "required": ["k"], "additionalProperties": True},
]


OBJECTS = [
    {"type": "object", "minProperties": 3, "properties": {"a": {"type": "null"}, "bb": {"const": "long value"},
     "c": {"type": "boolean"}, "d": {"type": "integer"}}, "required": ["c"]},
    {"type": "object", "minProperties": 2, "maxProperties": 2, "properties": {"x": {"type": "null"},
     "y": {"type": "string", "minLength": 4}}, "additionalProperties": {"enum": [1]}},
    {"type": "object", "properties": {"p": {"type": "null"}, "q": {"type": "null"}}, "required": ["q"],
     "additionalProperties": False},
]


@pytest.mark.parametrize("whitespace", ["compact", "flexible"])
@pytest.mark.parametrize("schema", SCHEMAS + OBJECTS, ids=[json.dumps(s)[:50] for s in SCHEMAS + OBJECTS])
def test_closed_forms_equal_the_search_along_random_walks(schema, whitespace):
    closed, searched = both(schema, extra_properties=True, whitespace=whitespace)
    assert_exit_costs_agree(closed, searched, random.Random(json.dumps(schema)), walks=12)


@pytest.mark.parametrize("schema", [{"type": "string", "minLength": 3},
                                    {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-zé😀\u4e2d]+$"},
                                    {"type": "object", "properties": {"ab": {"type": "integer"}},
                                     "additionalProperties": {"type": "string", "minLength": 2}}])
def test_closed_forms_inside_characters_equal_the_search(schema):
    # escapes, surrogate pairs and partial UTF-8 sequences, byte by byte (also inside an extra key that may still
    # become a declared name)
    closed, searched = both(schema, extra_properties=True)
    texts = ['"a\\u00', '"\\ud83d\\ude0', '"\\u4e2', '"é', '"\\"x', '"\\n', '"😀a', '"中',
             '{"a', '{"\\u0061', '{"ab":1,"x":"\\u00e', '{"é":"\\ud83d']
    for text in texts:
        state = closed.initial()
        for b in text.encode():
            state = closed.transitions(state).get(b)
            if state is None:
                break
            assert closed.min_bytes_to_final(state) == searched.min_bytes_to_final(state), text


def test_shortest_completion_is_a_valid_document_of_that_length():
    # the distance is exact: walking bytes that lower it by one ends in a final state after exactly that many
    for schema in SCHEMAS:
        a = schema_automaton(schema, extra_properties=True)
        state, out = a.initial(), bytearray()
        d = a.min_bytes_to_final(state)
        while not a.is_final(state):
            moves = a.transitions(state)
            b = min(b for b, t in moves.items() if a.min_bytes_to_final(t) == a.min_bytes_to_final(state) - 1)
            out.append(b)
            state = moves[b]
        assert len(out) == d
        jsonschema.validate(json.loads(out), schema)


@pytest.mark.parametrize("n", [10**12, 10**12 + 1])
def test_huge_lengths_are_exact_and_cheap(n):
    # n characters of (é|ab)+: pairs "ab" at 1 byte a character, one é (2 bytes) when n is odd
    a = schema_automaton({"type": "string", "pattern": "^(é|ab)+$", "minLength": n, "maxLength": n})
    assert a.min_bytes_to_final(a.initial()) == 2 + n + (n % 2)
    arr = schema_automaton({"type": "array", "minItems": n, "items": {"type": "string", "minLength": 3}})
    assert arr.min_bytes_to_final(arr.initial()) == 2 + 5 * n + (n - 1)  # "xxx" and a comma each
    props = {f"p{i}": {"type": "null"} for i in range(50)}
    obj = schema_automaton({"type": "object", "minProperties": 50, "properties": props, "maxProperties": n})
    assert obj.min_bytes_to_final(obj.initial()) == 2 + sum(len(f'"p{i}":null') for i in range(50)) + 49
    # NOTE: work, not seconds: closed forms, a few frames each (a walk of 1e12 characters would never end)
    assert len(a._exit) + len(arr._exit) + len(obj._exit) <= 500, (len(a._exit), len(arr._exit), len(obj._exit))


def test_lengths_past_the_horizon():
    with pytest.raises(UnsupportedSchemaError, match="minLength") as e:
        schema_automaton({"type": "string", "minLength": LENGTH_HORIZON + 1})
    assert e.value.pointer == "#"
    with pytest.raises(UnsupportedSchemaError, match="minItems"):
        schema_automaton({"properties": {"x": {"type": "array", "minItems": 1e300}}})
    # an upper bound past it bounds nothing that can be generated: read as absent
    a = schema_automaton({"type": "string", "maxLength": 2**62})
    assert accepts(a, json.dumps("x" * 5000))
    b = schema_automaton({"type": "array", "maxItems": 1e300, "items": {"type": "null"}})
    assert accepts(b, "[null,null]")


def test_viability_of_long_lengths_matches_the_pattern():
    # (ab)+ has only even lengths: an odd exact length admits nothing; `^a{3}$` no length past 3
    with pytest.raises(Exception, match="admits no value"):
        schema_automaton({"type": "string", "pattern": "^(ab)+$", "minLength": 10**9 + 1, "maxLength": 10**9 + 1})
    with pytest.raises(Exception, match="admits no value"):
        schema_automaton({"type": "string", "pattern": "^a{3}$", "minLength": 4})
    a = schema_automaton({"type": "string", "pattern": "^(ab)+$", "minLength": 10**9 + 1})
    assert a.min_bytes_to_final(a.initial()) == 2 + 10**9 + 1 + 1


def test_repeated_extra_keys_never_make_up_min_properties():
    # `{"a":1,"a":2}` is one property to a parser: extra keys may repeat, so at most one counts towards the minimum
    a = schema_automaton({"type": "object", "minProperties": 2, "properties": {"k": {"type": "integer"}},
                          "additionalProperties": {"type": "integer"}})
    assert accepts(a, '{"k":1,"x":2}')
    assert not accepts(a, '{"x":1,"y":2}') and not accepts(a, '{"x":1,"x":2}')
    with pytest.raises(Exception, match="admits no value"):
        schema_automaton({"type": "object", "minProperties": 2, "additionalProperties": True})
    assert accepts(schema_automaton({"type": "object", "maxProperties": 2, "additionalProperties": True}),
                   '{"x":1,"y":2}')


def test_char_cost_is_the_shortest_json_spelling():
    for cp in list(range(0x300)) + [0x7FF, 0x800, 0xFFFF, 0x10000, 0x10FFFF]:
        if 0xD800 <= cp <= 0xDFFF:
            continue
        spelled = json.dumps(chr(cp), ensure_ascii=False)[1:-1].encode()
        assert char_cost(cp) == min(len(spelled), 6), hex(cp)
    assert char_cost(0xD800) is None


_BOUND = st.one_of(st.none(), st.integers(-300, 300), st.decimals(-9, 9, places=2).map(float))

NUMBERS = [{"type": "number", "minimum": 0.5, "maximum": 0.75}, {"type": "number", "exclusiveMinimum": 2.25,
           "exclusiveMaximum": 2.5}, {"type": "number", "minimum": -0.05, "maximum": -0.01},
           {"type": "integer", "minimum": 17, "maximum": 17}, {"type": "number", "minimum": 1.5, "multipleOf": 2},
           {"type": "number"}, {"type": "integer"}, {"enum": [12, 1.5, 2e-7, -0.25, "ab", 123456]}]


@pytest.mark.parametrize("schema", NUMBERS, ids=[json.dumps(n)[:40] for n in NUMBERS])
def test_fractional_number_exit_costs_equal_the_search(schema):
    closed, searched = both(schema)
    for text in ("", "-", "0", "0.", "2.2", "-0.0", "1", "17", "2", "1e", "1e-", "1.5e+2", "2e-", "12345"):
        state = closed.initial()
        for b in text.encode():
            state = closed.transitions(state).get(b)
            if state is None:
                break
        else:
            assert closed.min_bytes_to_final(state) == searched.min_bytes_to_final(state), (schema, text)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(integer=st.booleans(), lo=_BOUND, hi=_BOUND, lo_x=st.booleans(), hi_x=st.booleans(),
       mult=st.one_of(st.none(), st.integers(1, 7)), seed=st.integers(0, 99))
def test_number_exit_costs_equal_the_search(integer, lo, hi, lo_x, hi_x, mult, seed):
    schema = number_schema(integer, lo, hi, lo_x, hi_x)
    if mult is not None:
        schema["multipleOf"] = mult
    try:
        closed, searched = both(schema)
    except Exception as e:  # an empty range: nothing to compare
        assert "admits no value" in str(e)
        return
    rng = random.Random(seed)
    state = closed.initial()
    for _ in range(8):
        assert closed.min_bytes_to_final(state) == searched.min_bytes_to_final(state), schema
        moves = closed.transitions(state)
        if not moves:
            break
        state = moves[rng.choice(sorted(moves))]


def test_numbers_with_far_bounds_bound_at_once():
    for schema, want in [({"type": "integer", "minimum": 10**14}, 15), ({"type": "integer", "maximum": -10**10}, 12),
                         ({"type": "number", "exclusiveMinimum": 0, "maximum": 1e-10}, len("0.0000000001")),
                         ({"type": "integer", "minimum": 123456789, "multipleOf": 1000}, 9)]:
        a = schema_automaton(schema)
        assert a.min_bytes_to_final(a.initial()) == want, schema
        # NOTE: work, not seconds (the machines are shared): the frame search visited ~1e8 frames for minimum 1e8
        # (85 s, then failed); the closed form answers from the first frame
        assert len(a._exit) <= 4, (schema, len(a._exit))


def test_an_object_of_5000_optional_properties_bounds_at_once():
    # the frame search walked every choice of properties: 90 s in the decoding loop
    props = {f"k{i}": {"type": "integer"} for i in range(5000)}
    a = schema_automaton({"type": "object", "properties": props, "minProperties": 3}, max_states=10**6)
    assert a.min_bytes_to_final(a.initial()) == len('{"k0":0,"k1":0,"k2":0}')
    state = a.initial()
    for b in b'{"k4990":12':  # properties come in order: two of the nine after it are still needed
        state = a.transitions(state)[b]
    assert a.min_bytes_to_final(state) == len(',"k4991":0,"k4992":0}')
    # NOTE: work, not seconds: linear in the properties (each key's own exit cost, ~5 frames), where the search over
    # choices of properties grew combinatorially
    assert len(a._exit) <= 6 * len(props)
