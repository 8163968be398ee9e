"""structgen/bench/cases.py: loading, sampling and limiting benchmark schemas and workloads."""

import json

import pytest

from structgen.bench.cases import instance_text, load_extraction, load_schema_cases


@pytest.fixture
def data_dir(tmp_path):
    for split, n in (("A", 5), ("B", 3)):
        (tmp_path / split).mkdir()
        for i in range(n):
            doc = {"schema": {"type": "integer", "maximum": i},
                   "tests": [{"data": i, "valid": True}, {"data": i + 1, "valid": False}]}
            (tmp_path / split / f"{i:04d}.json").write_text(json.dumps(doc))
    (tmp_path / "MANIFEST.tsv").write_text("not a split")
    return tmp_path


def test_loads_every_split_with_labelled_instances(data_dir):
    cases = load_schema_cases(data_dir)
    assert [c.case_id for c in cases][:2] == ["A/0000.json", "A/0001.json"] and len(cases) == 8
    assert [(i.data, i.valid) for i in cases[1].instances] == [(1, True), (2, False)]


def test_sample_is_seeded_per_split_and_limit_spreads_over_splits(data_dir):
    a = load_schema_cases(data_dir, sample=2, seed=1)
    assert a == load_schema_cases(data_dir, sample=2, seed=1)
    assert [c.split for c in a] == ["A", "A", "B", "B"]
    # a split's sample does not depend on which other splits were asked for
    assert [c for c in a if c.split == "B"] == load_schema_cases(data_dir, ["B"], sample=2, seed=1)
    limited = load_schema_cases(data_dir, limit=3)
    assert sorted(c.split for c in limited) == ["A", "A", "B"]


def test_bad_arguments_are_clear(data_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        load_schema_cases(data_dir, ["Nope"])
    with pytest.raises(FileNotFoundError, match="STRUCTGEN_DATA_DIR"):
        load_schema_cases(tmp_path / "missing")
    with pytest.raises(ValueError):
        load_schema_cases(data_dir, sample=-1)


def test_instance_text_is_compact_utf8():
    assert instance_text({"k": ["é", 1.5, None]}) == '{"k":["é",1.5,null]}'


def test_extraction_workload_from_folder_and_jsonl(tmp_path):
    folder = tmp_path / "dev"
    folder.mkdir()
    (folder / "0000.json").write_text(json.dumps({"id": "x1", "schema": {"type": "object"}, "text": "hi"}))
    assert [i.item_id for i in load_extraction(folder)] == ["x1"]
    jl = tmp_path / "w.jsonl"
    jl.write_text(json.dumps({"schema": {}, "text": "a"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    with pytest.raises(ValueError, match="'schema' and 'text'"):
        load_extraction(jl)
