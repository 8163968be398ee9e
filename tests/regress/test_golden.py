"""Golden sets: both forms load, and every malformed form is refused naming its file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from structgen.regress.golden import GoldenError, load_golden

DATA = Path(__file__).parent / "data"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def _write(tmp_path: Path, lines: list) -> Path:
    path = tmp_path / "golden.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_the_test_set_loads_with_every_input_and_constraint_kind():
    g = load_golden(DATA / "golden.jsonl")
    kinds = {(c.input_kind, c.constraint_kind) for c in g.cases}
    assert {k for k, _ in kinds} == {"text", "messages", "prompt"}
    assert {k for _, k in kinds} == {"schema", "regex", "choices"}
    assert any(c.has_expected for c in g.cases) and any(not c.has_expected for c in g.cases)
    assert len(g.digest) == 64


def test_dev_folder_form_loads_ids_from_the_items(tmp_path):
    for i, expected in enumerate(({"a": 1}, {"a": 2})):
        (tmp_path / f"{i:04d}.json").write_text(json.dumps({"schema": SCHEMA, "text": f"a is {i + 1}",
                                                            "expected": expected, "license": "x"}))
    g = load_golden(tmp_path)
    assert [c.case_id for c in g.cases] == ["0000", "0001"]
    assert g.cases[1].expected == {"a": 2} and g.cases[1].input_kind == "text"


def test_digest_ignores_formatting_but_not_content(tmp_path):
    a = _write(tmp_path, [{"id": "x", "prompt": "p", "regex": "[0-9]"}])
    d1 = load_golden(a).digest
    a.write_text('{ "regex": "[0-9]",   "id": "x", "prompt": "p" }\n\n')
    assert load_golden(a).digest == d1
    a.write_text(json.dumps({"id": "x", "prompt": "p", "regex": "[0-8]"}) + "\n")
    assert load_golden(a).digest != d1


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not JSON"),
    ('["a list"]', "a case is a JSON object"),
    ({"prompt": "p", "regex": "a"}, "'id' must be a non-empty string"),
    ({"id": "x", "regex": "a"}, "exactly one input"),
    ({"id": "x", "prompt": "p", "text": "t", "regex": "a"}, "exactly one input"),
    ({"id": "x", "prompt": "p"}, "exactly one constraint"),
    ({"id": "x", "prompt": "p", "regex": "a", "choices": ["a"]}, "exactly one constraint"),
    ({"id": "x", "prompt": "p", "regex": "a", "expeted": "a"}, "unknown key(s) 'expeted'"),
    ({"id": "x", "text": "t", "regex": "a"}, "a 'text' case is extracted with a schema"),
    ({"id": "x", "prompt": "p", "regex": "(unclosed"}, "'regex' does not compile"),
    ({"id": "x", "prompt": "p", "choices": []}, "'choices' must be a non-empty list"),
    ({"id": "x", "prompt": "p", "schema": {"type": "nope"}}, "not a valid JSON Schema"),
    ({"id": "x", "messages": [{"role": "robot", "content": "hi"}], "regex": "a"}, "messages[0].role"),
    ({"id": "x", "messages": "hi", "regex": "a"}, "'messages' must be a non-empty list"),
    ({"id": "x", "prompt": "p", "regex": "[0-9]", "expected": "ab"}, "does not fully match the regex"),
    ({"id": "x", "prompt": "p", "choices": ["a", "b"], "expected": "c"}, "is not one of the choices"),
    ({"id": "x", "prompt": "p", "schema": SCHEMA, "expected": {"a": "one"}}, "does not validate"),
    ({"id": "x", "prompt": "p", "regex": "a", "acceptable": {"a": ["a"]}}, "schema cases only"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, [{"id": "ok", "prompt": "p", "regex": "a"}, bad])
    with pytest.raises(GoldenError) as e:
        load_golden(path)
    assert f"{path}:2" in str(e.value)
    assert message in str(e.value)


def test_duplicate_id_names_both_lines(tmp_path):
    path = _write(tmp_path, [{"id": "x", "prompt": "p", "regex": "a"}, {"id": "y", "prompt": "p", "regex": "a"},
                             {"id": "x", "prompt": "q", "regex": "a"}])
    with pytest.raises(GoldenError, match=r":3: duplicate id 'x' \(first on line 1\)"):
        load_golden(path)


def test_bad_dev_item_names_its_file(tmp_path):
    (tmp_path / "0000.json").write_text(json.dumps({"schema": SCHEMA, "text": "a is 1"}))
    (tmp_path / "0001.json").write_text(json.dumps({"schema": SCHEMA}))
    with pytest.raises(GoldenError, match=r"0001\.json \(id '0001'\): a case needs exactly one input"):
        load_golden(tmp_path)


def test_missing_and_empty_sets_are_refused(tmp_path):
    with pytest.raises(GoldenError, match="not found"):
        load_golden(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(GoldenError, match="holds no cases"):
        load_golden(tmp_path / "empty.jsonl")
