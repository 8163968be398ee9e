"""Scoring one output for each constraint kind."""

from __future__ import annotations

import json

from structgen.regress.golden import parse_case
from structgen.regress.outcome import CaseResult, failed_case, same_output, score_case

SCHEMA = {"title": "t", "type": "object", "properties": {"d": {"type": "string", "format": "date"},
                                                         "n": {"type": "number"}}, "required": ["d", "n"]}


def _case(**doc):
    return parse_case({"id": "c", **doc}, "test")


def test_schema_case_validity_exact_and_fields():
    case = _case(prompt="p", schema=SCHEMA, expected={"d": "2024-03-15", "n": 30})
    r = score_case(case, '{"d": "2024-03-15", "n": 30.0}', "stop")
    assert r.valid and r.exact is True and r.fields == {"d": True, "n": True} and r.title == "t"
    r = score_case(case, '{"d": "2024-03-16", "n": 30}', "stop")
    assert r.valid and r.exact is False and r.fields == {"d": False, "n": True}
    # a format the schema names is checked: 2024-13-01 is no date
    r = score_case(case, '{"d": "2024-13-01", "n": 30}', "stop")
    assert not r.valid and r.exact is False and r.fields == {"d": False, "n": False}
    assert not score_case(case, '{"d": "2024-03-15"', "length").valid


def test_schema_case_uses_acceptable_answers_and_no_expected_means_no_exact():
    case = _case(text="x", schema=SCHEMA, acceptable={"d": ["2024-03-15", "15/03/2024"], "n": [30]})
    r = score_case(case, '{"d": "2024-03-15", "n": 30}', "stop")
    assert r.exact is None and r.fields == {"d": True, "n": True}
    assert score_case(_case(prompt="p", schema=SCHEMA), '{"d": "2024-03-15", "n": 1}', "stop").fields == {}


def test_regex_case_is_a_full_match():
    case = _case(prompt="p", regex="[0-9]{2}", expected="42")
    assert score_case(case, "42", "stop").exact is True
    r = score_case(case, "421", "stop")
    assert not r.valid and r.exact is False
    assert score_case(case, "17", "stop").valid and score_case(case, "17", "stop").exact is False


def test_choices_case_is_membership():
    case = _case(messages=[{"role": "user", "content": "?"}], choices=["yes", "no"], expected="yes")
    assert score_case(case, "yes", "stop").exact is True
    assert score_case(case, "no", "stop").valid and not score_case(case, "no", "stop").exact
    assert not score_case(case, "yes!", "stop").valid


def test_failed_case_is_invalid_with_every_field_wrong_and_round_trips():
    case = _case(prompt="p", schema=SCHEMA, expected={"d": "2024-03-15", "n": 30})
    r = failed_case(case, "DEADLINE_EXCEEDED", 1.5, "too slow")
    assert not r.valid and r.exact is False and r.fields == {"d": False, "n": False} and r.finish == "error"
    assert CaseResult.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_same_output_compares_json_values_for_schema_cases():
    assert same_output("schema", '{"a": 1, "b": 2}', '{"b":2,"a":1.0}')
    assert not same_output("schema", '{"a": true}', '{"a": 1}')
    assert not same_output("regex", "12", "12 ")


def test_nested_expected_values_are_scored_leaf_by_leaf():
    schema = {"type": "object", "properties": {
        "total": {"type": "object", "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}}},
        "note": {"type": ["string", "null"]}, "tags": {"type": "array", "items": {"type": "string"}}}}
    case = _case(prompt="p", schema=schema, expected={"total": {"amount": 12.5, "currency": "EUR"}, "note": None,
                                                      "tags": ["a", "b"]})
    r = score_case(case, '{"total": {"amount": 12.5, "currency": "USD"}, "tags": ["a", "b"]}', "stop")
    assert r.fields == {"total.amount": True, "total.currency": False, "note": True, "tags": True}
    assert r.exact is False   # the omitted null is a right field, but not the expected value
    assert score_case(case, '{"total": {"amount": 12.5, "currency": "EUR"}, "tags": ["b", "a"]}',
                      "stop").fields["tags"] is False
    assert set(failed_case(case, "UNAVAILABLE", 0.0, "").fields.values()) == {False}
