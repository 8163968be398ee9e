"""structgen/bench/cli.py: `structgen bench <mode>` parses, runs end to end and writes its files."""

import json

import pytest

from structgen.bench.report import read_jsonl
from structgen.cli import main

from . import fake_engines as fakes


@pytest.fixture
def data_dir(tmp_path):
    split = tmp_path / "data" / "Tiny"
    split.mkdir(parents=True)
    docs = [{"schema": {"type": "integer"}, "tests": [{"data": 3, "valid": True}, {"data": "3", "valid": False}]},
            {"schema": {"type": "boolean"}, "tests": [{"data": True, "valid": True}]}]
    for i, d in enumerate(docs):
        (split / f"{i:04d}.json").write_text(json.dumps(d))
    return tmp_path / "data"


def test_masks_command_end_to_end_with_a_missing_peer(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "masks", "--data", str(data_dir), "--engines",
               f"{fakes.__name__}:OracleEngine,{fakes.__name__}:broken_factory", "--timeout", "20",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"| {fakes.__name__}:OracleEngine | 2 | 2 (100.0%) |" in printed
    assert "not installed" in printed
    records = read_jsonl(out / "results.jsonl")
    assert records[0]["command"].startswith("structgen ") and records[0]["cores"] >= 1
    assert sorted(r["case_id"] for r in records if r["type"] == "schema") == ["Tiny/0000.json", "Tiny/0001.json"]
    assert (out / "summary.md").read_text().count("\n") > 5 and (out / "masks.png").exists()


def test_bad_arguments_give_a_clear_message(data_dir, tmp_path, capsys):
    assert main(["bench", "masks", "--data", str(data_dir), "--splits", "Nope", "--out", str(tmp_path)]) == 2
    assert "unknown split" in capsys.readouterr().err
    assert main(["bench", "masks", "--data", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["bench", "serve", "--concurrency", "0,x"])
    assert main(["bench"]) == 2
