"""One case's outcome: the output a run recorded, and how it scores against the case (pure: no server).

Validity is the constraint's own judgement: a schema case's output parses as JSON and validates under the schema
(jsonschema, the schema's draft else 2020-12, formats checked: `bench.scoring.check_json`), a regex case's output
fully matches the pattern (Python's `re`, the judge the compiler follows where dialects differ), a choices case's
output is one of the choices. Exact match, where the case has `expected`: JSON equality for schema cases
(`bench.scoring.json_equal`: 30 == 30.0, True != 1), string equality otherwise. Per-field correctness (schema
cases): `bench.scoring.field_scores` against the case's `acceptable` answers, else against `expected`'s top-level
values; a nested object in `expected` is scored leaf by leaf ("total.currency", "total.amount"), so drift in
one nested field shows as that field, not as its whole parent object (arrays are compared whole).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields

from ..bench.scoring import check_json, field_scores, json_equal
from .golden import GoldenCase


@dataclass
class CaseResult:
    """What one run recorded for one case (one line of results.jsonl). `status` is "OK" or the error's status;
    `exact` is None for a case without `expected`; `fields` maps a top-level key to right/wrong (empty when the
    case has no per-field answers)."""

    id: str
    constraint_kind: str
    status: str
    finish: str
    title: str = ""             # the schema's title: per-field drift is reported as "<title>.<key>"
    text: str = ""
    valid: bool = False
    exact: bool | None = None
    fields: dict[str, bool] = field(default_factory=dict)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> "CaseResult":
        names = {f.name for f in fields(cls)}
        missing = {"id", "constraint_kind", "status", "finish"} - set(doc)
        if missing:
            raise ValueError(f"a result needs {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in doc.items() if k in names})


def valid_output(kind: str, constraint, text: str) -> bool:
    """Does `text` satisfy the constraint (see the module docstring)?"""
    if kind == "schema":
        return check_json(constraint, text)
    if kind == "regex":
        try:
            return re.fullmatch(constraint, text) is not None
        except re.error:
            return False
    return text in constraint


def acceptable_answers(case: GoldenCase) -> dict | None:
    """{top-level key: [accepted values]} of a schema case, or None when it has no per-field answers."""
    if case.constraint_kind != "schema":
        return None
    if case.acceptable is not None:
        return case.acceptable
    if case.has_expected and isinstance(case.expected, dict):
        return {k: [v] for k, v in case.expected.items()}
    return None


def _leaves(expected: dict, prefix: str = "") -> dict[str, object]:
    """{"a": 1, "b": {"c": 2}} -> {"a": 1, "b.c": 2}; an empty object stays one leaf."""
    out: dict[str, object] = {}
    for key, v in expected.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict) and v:
            out.update(_leaves(v, name + "."))
        else:
            out[name] = v
    return out


def _at(value, path: str):
    """(found, the value at dotted `path`) inside nested objects."""
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def case_fields(case: GoldenCase, value) -> dict[str, bool]:
    """{field: right?} of a schema case's output value (None: no valid value, every field wrong).

    With `acceptable`: its top-level keys, by `bench.scoring.field_scores`. Else with an `expected` object: each
    leaf of it, right when the output holds an equal value at the same path, or omits a leaf expected as null
    (a field left null and a field left out say the same)."""
    answers = acceptable_answers(case)
    if case.acceptable is not None or answers is None:
        return field_scores(value, answers) if answers is not None else {}
    out = {}
    for path, want in _leaves(case.expected).items():
        found, got = _at(value, path)
        out[path] = value is not None and (json_equal(got, want) if found else want is None)
    return out


def same_output(kind: str, a: str, b: str) -> bool:
    """Two outputs say the same: equal JSON values for schema cases (key order and spacing aside), else equal
    strings. Used where a case has no `expected` and agreement with the baseline stands in for it."""
    if kind == "schema":
        try:
            return json_equal(json.loads(a), json.loads(b))
        except ValueError:
            return a == b
    return a == b


def score_case(case: GoldenCase, text: str, finish: str, *, latency_s: float = 0.0, prompt_tokens: int = 0,
               output_tokens: int = 0) -> CaseResult:
    """Score a server's output `text` for `case`."""
    valid = valid_output(case.constraint_kind, case.constraint, text)
    exact = None
    value = None
    if case.constraint_kind == "schema" and valid:
        value = json.loads(text)
    if case.has_expected:
        if case.constraint_kind == "schema":
            exact = valid and json_equal(value, case.expected)
        else:
            exact = valid and text == case.expected
    return CaseResult(case.case_id, case.constraint_kind, "OK", finish, _title(case), text, valid, exact,
                      case_fields(case, value), latency_s, prompt_tokens, output_tokens)


def failed_case(case: GoldenCase, status: str, latency_s: float, detail: str) -> CaseResult:
    """A request that got no output: invalid, not exact, every field wrong."""
    return CaseResult(case.case_id, case.constraint_kind, status, "error", _title(case), "", False,
                      False if case.has_expected else None, case_fields(case, None), latency_s, detail=detail)


def _title(case: GoldenCase) -> str:
    if case.constraint_kind == "schema" and isinstance(case.constraint.get("title"), str):
        return case.constraint["title"]
    return ""
