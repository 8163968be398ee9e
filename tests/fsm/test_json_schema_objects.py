"""Object keywords made exact (structgen/fsm/json_schema/objects.py, object_keys.py, compiler.Compiler.object):
dependentRequired, dependentSchemas, draft-07 dependencies, min/maxProperties, patternProperties (overlapping, next
to additionalProperties), propertyNames, and the any-order option (property_order="any")."""

from __future__ import annotations

import json
import random
import time

import jsonschema
import pytest
from automaton_helpers import accepts, assert_exit_costs_agree, data_dir, descend_to_final, random_walk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structgen.errors import ConstraintError, InvalidSchemaError, UnsupportedSchemaError
from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.json_schema.compiler import Compiler
from structgen.fsm.json_schema.matcher import SchemaAutomaton

SUITE = data_dir() / "json-schema-test-suite"
SUITE_FILES = ["dependentRequired", "dependentSchemas", "minProperties", "maxProperties", "patternProperties",
               "propertyNames", "additionalProperties", "properties", "required"]
# (file, group, case) -> why a valid instance is rejected; every other case must come out as the suite says.
SUITE_EXCEPTIONS = {
    ("dependentSchemas.json", "dependencies with escaped characters", "quoted tab"):
        "minProperties 4 met only with three undeclared keys: extra keys of one class may repeat, so they count once",
}
# Groups refused with a clear error, and why.
SUITE_REFUSED = {
    ("patternProperties.json", "patternProperties with Unicode property escape"):
        r"`\p{Letter}`: Python's re, which validators use, rejects the pattern",
}


def _validator(schema):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator) \
        if isinstance(schema, dict) else jsonschema.Draft202012Validator
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _suite_groups():
    base = SUITE / "draft2020-12"
    for name in SUITE_FILES:
        path = base / f"{name}.json"
        if path.is_file():
            for group in json.loads(path.read_text()):
                yield path.name, group


@pytest.mark.skipif(not (SUITE / "draft2020-12").is_dir(), reason=f"JSON-Schema-Test-Suite not found at {SUITE}")
@pytest.mark.parametrize("order", ["any", "schema"])
def test_official_suite_groups_of_object_keywords(order):
    wrong, refused = [], []
    for file, group in _suite_groups():
        try:
            a = schema_automaton(group["schema"], extra_properties=True, property_order=order)
        except ConstraintError as e:
            refused.append((file, group["description"]))
            assert (file, group["description"]) in SUITE_REFUSED, (file, group["description"], str(e))
            continue
        for case in group["tests"]:
            texts = {json.dumps(case["data"]), json.dumps(case["data"], ensure_ascii=False),
                     json.dumps(case["data"], separators=(",", ":"))}
            for text in texts:
                got = accepts(a, text)
                if got == case["valid"]:
                    continue
                key = (file, group["description"], case["description"])
                if case["valid"] and key in SUITE_EXCEPTIONS:
                    continue
                if case["valid"] and order == "schema" and isinstance(case["data"], dict) and len(case["data"]) > 1:
                    continue  # keys only in `properties` order
                wrong.append(key + (text, case["valid"]))
    assert wrong == []
    assert sorted(refused) == sorted(SUITE_REFUSED)


def test_draft7_dependencies_file_when_present():
    path = SUITE / "draft7" / "dependencies.json"
    if not path.is_file():
        pytest.skip(f"draft7 dependencies.json not in {SUITE} (only draft2020-12 is shipped)")
    for group in json.loads(path.read_text()):
        a = schema_automaton(group["schema"], extra_properties=True, property_order="any")
        for case in group["tests"]:
            assert accepts(a, json.dumps(case["data"])) == case["valid"], (group["description"], case["description"])


# ------------------------------------------------------------------------------------------ keyword by keyword
def _any(schema, **kw):
    return schema_automaton(schema, extra_properties=True, property_order="any", **kw)


def test_dependent_required_in_both_orders():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                                               "c": {"type": "integer"}},
              "dependentRequired": {"c": ["a"], "a": ["b"]}}
    for order in ("schema", "any"):
        a = schema_automaton(schema, property_order=order)
        assert accepts(a, '{"a":1,"b":2}') and accepts(a, '{"b":2}') and accepts(a, "{}")
        assert not accepts(a, '{"a":1}') and not accepts(a, '{"c":1}') and not accepts(a, '{"b":1,"c":1}')
        assert accepts(a, '{"a":1,"b":2,"c":3}')
    a = schema_automaton(schema, property_order="any")
    assert accepts(a, '{"c":3,"b":2,"a":1}') and not accepts(a, '{"c":3,"b":2}')


def test_draft7_dependencies_both_forms():
    schema = {"type": "object", "properties": {"card": {"type": "string"}, "billing": {"type": "string"},
                                               "kind": {"enum": ["x", "y"]}},
              "dependencies": {"card": ["billing"], "kind": {"properties": {"card": {"maxLength": 2}}}}}
    a = schema_automaton(schema, property_order="any")
    assert accepts(a, '{"card":"1234","billing":"b"}') and not accepts(a, '{"card":"1234"}')
    assert accepts(a, '{"kind":"x","card":"12","billing":"b"}')
    assert not accepts(a, '{"kind":"x","card":"123","billing":"b"}')
    assert accepts(a, '{"card":"123","billing":"b"}')


def test_dependent_schemas_cases():
    schema = {"type": "object", "properties": {"k": {"type": "integer"}, "v": {}},
              "dependentSchemas": {"k": {"properties": {"v": {"type": "string"}}, "required": ["v"]},
                                   "gone": False, "free": True}}
    a = _any(schema)
    assert accepts(a, '{"k":1,"v":"s"}') and not accepts(a, '{"k":1,"v":2}') and not accepts(a, '{"k":1}')
    assert accepts(a, '{"v":2}') and accepts(a, '{"free":0}') and not accepts(a, '{"gone":0}')
    with pytest.raises(UnsupportedSchemaError) as e:
        _any({"type": "object", "dependentSchemas": {f"t{i}": {"maxProperties": 3} for i in range(5)}})
    assert e.value.keyword == "dependentSchemas" and e.value.pointer == "#"


def test_min_max_properties_count_distinct_keys():
    schema = {"type": "object", "properties": {"a": {}, "b": {}}, "patternProperties": {"^x": {"type": "integer"}},
              "additionalProperties": {"type": "string"}, "minProperties": 3, "maxProperties": 3}
    a = _any(schema)
    assert accepts(a, '{"a":1,"x1":2,"z":"s"}') and accepts(a, '{"x1":2,"b":0,"a":1}')
    assert not accepts(a, '{"a":1,"x1":2}') and not accepts(a, '{"a":1,"b":2,"x":1,"y":"s"}')
    # a named key never repeats (a parser would keep one: the object would be short of the minimum)
    assert not accepts(a, '{"a":1,"a":2,"x":1}') and not accepts(a, '{"a":1,"x":1,"a":2}')
    # NOTE (documented, objects.py): extra keys of one class may repeat; each class counts once towards the minimum
    assert not accepts(a, '{"a":1,"x1":1,"x2":2}')
    assert accepts(_any({"type": "object", "maxProperties": 1}), "{}")
    assert not accepts(_any({"type": "object", "maxProperties": 0}), '{"a":1}')


def test_pattern_properties_overlap_and_additional():
    schema = {"type": "object", "patternProperties": {"a": {"type": "integer"}, "aa": {"maximum": 20}},
              "additionalProperties": {"type": "boolean"}}
    a = _any(schema)
    assert accepts(a, '{"a":30,"aa":20,"zz":true}') and not accepts(a, '{"aa":21}') and not accepts(a, '{"zz":1}')
    assert not accepts(a, '{"ba":"s"}') and accepts(a, '{"xaay":3}')
    # strict mode generates pattern keys too, and closes what no pattern matches
    s = schema_automaton({"type": "object", "properties": {"id": {"type": "integer"}},
                          "patternProperties": {"^x-": {"type": "string"}}})
    assert accepts(s, '{"id":1,"x-a":"s"}') and not accepts(s, '{"id":1,"y":"s"}') and not accepts(s, '{"x-a":1}')


def test_pattern_classes_that_need_exact_labels_keep_to_printable_ascii():
    # a key that \\d (Unicode in Python's re) matches must not be taken for one no pattern matches
    schema = {"type": "object", "patternProperties": {"^\\d+$": {"type": "integer"}},
              "additionalProperties": {"type": "string"}}
    a = _any(schema)
    assert accepts(a, '{"12":1,"ab":"s"}') and not accepts(a, '{"12":"s"}')
    assert not accepts(a, json.dumps({"\u0663": "s"}, ensure_ascii=False))  # ARABIC-INDIC DIGIT THREE
    assert not accepts(a, json.dumps({"\u0663": "s"}))
    # patterns that tell nothing apart leave keys free
    free = _any({"type": "object", "patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False})
    assert accepts(free, json.dumps({"xé": 1}, ensure_ascii=False))


def test_property_names_forms():
    a = _any({"type": "object", "propertyNames": {"maxLength": 3}})
    assert accepts(a, '{"abc":1}') and not accepts(a, '{"abcd":1}')
    a = _any({"type": "object", "propertyNames": {"pattern": "^a+$"}, "properties": {"b": {}}})
    assert accepts(a, '{"aa":1}') and not accepts(a, '{"b":1}') and not accepts(a, '{"ab":1}')
    a = _any({"type": "object", "propertyNames": {"enum": ["foo", "bar"]}, "additionalProperties": {"type": "integer"}})
    assert accepts(a, '{"bar":1,"foo":2}') and not accepts(a, '{"baz":1}') and not accepts(a, '{"foo":"s"}')
    a = _any({"type": "object", "propertyNames": {"const": "k"}})
    assert accepts(a, '{"k":[]}') and not accepts(a, '{"j":[]}')
    a = _any({"type": "object", "propertyNames": {"format": "date"}})
    assert accepts(a, '{"2024-01-31":1}') and not accepts(a, '{"2024-13-01":1}')
    a = _any({"type": "object", "propertyNames": False})
    assert accepts(a, "{}") and not accepts(a, '{"a":1}')
    with pytest.raises(InvalidSchemaError, match="admits no value"):
        _any({"type": "object", "propertyNames": {"maxLength": 2}, "required": ["long"]})
    with pytest.raises(UnsupportedSchemaError) as e:
        _any({"type": "object", "propertyNames": {"anyOf": [{"maxLength": 2}, {"pattern": "^x"}]}})
    assert e.value.keyword == "propertyNames" and e.value.pointer == "#/propertyNames"


def test_all_of_keeps_each_schemas_additional_properties():
    # each branch's additionalProperties applies to the keys *it* does not name
    schema = {"allOf": [{"patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False},
                        {"properties": {"x1": {"minimum": 5}, "y": {}}}], "type": "object"}
    a = _any(schema)
    assert accepts(a, '{"x1":5,"x2":0}') and not accepts(a, '{"x1":4}') and not accepts(a, '{"y":1}')
    assert not accepts(a, '{"x2":"s"}')


def test_property_order_option():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}
    assert not accepts(schema_automaton(schema), '{"b":1,"a":2}')
    a = schema_automaton(schema, property_order="any")
    assert accepts(a, '{"b":1,"a":2}') and not accepts(a, '{"b":1}') and not accepts(a, '{"a":1,"b":2,"a":3}')
    with pytest.raises(ValueError):
        schema_automaton(schema, property_order="random")


def test_any_order_stays_lazy_and_small():
    props = {f"p{i}": {"type": "integer"} for i in range(20)}
    a = schema_automaton({"type": "object", "properties": props, "minProperties": 2}, property_order="any")
    assert a.num_states == 0
    text = json.dumps({f"p{i}": i for i in reversed(range(20))})
    t = time.monotonic()
    state = a.initial()
    for b in text.encode():
        assert a.min_bytes_to_final(state) < 200
        state = a.transitions(state)[b]
    assert a.is_final(state)
    assert time.monotonic() - t < 1.0
    assert a.num_states <= len(text) + 1  # one state per byte read: nothing built ahead
    state = a.transitions(a.initial())[ord("{")]
    assert a.min_bytes_to_final(state) == len('"p0":0,"p1":0}')


def _both(schema, order, whitespace):
    def make(closed: bool):
        root = Compiler(schema, extra_properties=True, whitespace=whitespace, max_recursion_depth=3,
                        property_order=order).compile()
        return SchemaAutomaton(root, max_states=1_000_000, closed_forms=closed)
    return make(True), make(False)


EXIT_SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "null"}, "bb": {"const": "long"}, "c": {"type": "boolean"}},
     "dependentRequired": {"a": ["bb"]}, "minProperties": 2},
    {"type": "object", "properties": {"a": {"type": "null"}, "b": {"type": "integer"}},
     "patternProperties": {"^x": {"type": "integer"}, "y$": {"type": "string", "minLength": 3}},
     "additionalProperties": {"type": "boolean"}, "minProperties": 3, "maxProperties": 4},
    {"type": "object", "propertyNames": {"pattern": "^[a-c]+$", "maxLength": 3}, "minProperties": 1},
    {"type": "object", "properties": {"k": {}}, "minProperties": 1,
     "dependentSchemas": {"k": {"required": ["zz"], "properties": {"zz": {"type": "string", "minLength": 4}}}}},
    {"type": "object", "properties": {"p": {"type": "integer"}, "q": {"type": "integer"}, "r": {"type": "integer"}},
     "dependentRequired": {"p": ["q"], "r": ["p"]}, "required": ["r"], "additionalProperties": False},
]


@pytest.mark.parametrize("whitespace", ["compact", "flexible"])
@pytest.mark.parametrize("order", ["schema", "any"])
@pytest.mark.parametrize("schema", EXIT_SCHEMAS, ids=[json.dumps(s)[:40] for s in EXIT_SCHEMAS])
def test_closed_form_exit_costs_equal_the_search(schema, order, whitespace):
    closed, searched = _both(schema, order, whitespace)
    assert_exit_costs_agree(closed, searched, random.Random(json.dumps(schema) + order), walks=10)


# --------------------------------------------------------------------------------------- random walks, differential
WALK_SCHEMAS = EXIT_SCHEMAS + [
    {"type": "object", "patternProperties": {"a": {"type": "integer"}, "aaa": {"maximum": 20}},
     "additionalProperties": {"type": "array", "maxItems": 1}, "propertyNames": {"maxLength": 4}},
    {"type": "object", "properties": {"foo": {"type": "array", "maxItems": 3}, "bar": {"type": "array"}},
     "patternProperties": {"f.o": {"minItems": 2}}, "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "required": ["a"], "maxProperties": 2,
     "dependencies": {"b": ["c"], "c": {"properties": {"a": {"type": "string"}}}}},
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, len(WALK_SCHEMAS) - 1),
       order=st.sampled_from(["schema", "any"]), whitespace=st.sampled_from(["compact", "flexible"]))
def test_random_walks_validate(seed, index, order, whitespace):
    schema = WALK_SCHEMAS[index]
    a = schema_automaton(schema, extra_properties=True, property_order=order, whitespace=whitespace)
    text = random_walk(a, random.Random(seed), max_bytes=300, finish=descend_to_final).decode("utf-8")
    _validator(schema).validate(json.loads(text))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_walks_through_suite_schemas_validate(seed):
    rng = random.Random(seed)
    groups = [g for _, g in _suite_groups()]
    if not groups:
        pytest.skip(f"JSON-Schema-Test-Suite not found at {SUITE}")
    group = rng.choice(groups)
    try:
        a = _any(group["schema"])
    except ConstraintError:
        return
    text = random_walk(a, rng, max_bytes=200, finish=descend_to_final).decode("utf-8")
    _validator(group["schema"]).validate(json.loads(text))


DIFF_SCHEMAS = [
    {"type": "object",
     "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"},
                    "xa": {"minimum": 3}},
     "patternProperties": {"^x": {"type": "integer"}, "y$": {"type": ["integer", "null"]}},
     "additionalProperties": {"type": "string"},
     "dependentRequired": {"a": ["b"]},
     "dependentSchemas": {"c": {"properties": {"a": {"maximum": 5}}, "required": ["a"]}},
     "propertyNames": {"maxLength": 3},
     "minProperties": 1, "maxProperties": 4},
    {"type": "object", "minProperties": 1,  # above 1, two undeclared keys of one class would not count twice
     "allOf": [{"patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
               {"properties": {"xa": {"minimum": 3}, "b": {}}, "additionalProperties": {"type": ["string", "integer"]},
                "propertyNames": {"pattern": "^[a-z]+$"}}]},
]
KEYS = ["a", "b", "c", "xa", "xb", "y", "xy", "zy", "q", "zz", "long", "Q", "x1"]
VALUES = [0, 4, 9, -1, "s", "", None, True, [1], {"k": 1}, 2.5]


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(DIFF_SCHEMAS) - 1),
       obj=st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=6), compact=st.booleans())
def test_near_valid_objects_accepted_exactly_when_valid(index, obj, compact):
    a = _diff_automaton(index)
    text = json.dumps(obj, separators=(",", ":") if compact else (", ", ": "))
    assert accepts(a, text) == _validator(DIFF_SCHEMAS[index]).is_valid(obj), text


_DIFF: dict = {}


def _diff_automaton(index: int):
    if index not in _DIFF:
        _DIFF[index] = _any(DIFF_SCHEMAS[index])
    return _DIFF[index]
