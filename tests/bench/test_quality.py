"""structgen/bench/quality.py: the scoring glue and tables with fake results, the command line's refusals, and one
real run (slow): 2 items through every system, the constrained systems' outputs validated with jsonschema."""

from __future__ import annotations

import argparse
import json

import jsonschema
import pytest

from structgen.bench.cases import ExtractionItem
from structgen.bench.quality import (SYSTEMS, check_args, parses_json, render_markdown, run_local_system,
                                     summarize_system)
from structgen.bench.report import read_jsonl
from structgen.bench.scoring import failed, score
from structgen.cli import main

SCHEMA = {"title": "person", "type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]}
ITEMS = [ExtractionItem(f"p{i}", SCHEMA, f"{name} is {age}.", expected={"name": name, "age": age})
         for i, (name, age) in enumerate([("Ann", 31), ("Bo", 7), ("Cy", 50)])]
HEADER = {"command": "structgen bench quality", "date": "d", "commit": "abc", "cpu": "cpu", "cores": 2,
          "gpu": "none"}


def _args(**kw) -> argparse.Namespace:
    base = dict(systems=list(SYSTEMS), datasets=["extraction"], limit=0, max_tokens=64, concurrency=1,
                timeout=60.0, engine_config={})
    return argparse.Namespace(**{**base, **kw})


def test_parses_json_is_any_json_value_only():
    assert parses_json('{"a": 1}') and parses_json(" [1, 2] ") and parses_json("3")
    assert not parses_json("Here is the JSON: {}") and not parses_json('```json\n{"a": 1}\n```')
    assert not parses_json('{"a": 1') and not parses_json("")


def test_summarize_system_counts_json_beside_valid_values():
    results = [score(ITEMS[0], '{"name": "Ann", "age": 31}', "stop", output_tokens=10, latency_s=1.0),
               score(ITEMS[1], '{"age": 7}', "stop", output_tokens=4, latency_s=3.0),   # JSON, not valid
               score(ITEMS[2], "Cy is fifty", "length", output_tokens=6, latency_s=2.0)]
    s = summarize_system(results, wall_s=4.0)
    assert (s["requests"], s["valid"], s["parses_json"], s["exact"]) == (3, 1, 2, 1)
    assert s["fields_right"] == 2 and s["fields"] == 6                     # Ann's two fields; Bo's invalid
    assert s["out_tok_per_s"] == 5.0 and s["latency"]["p50"] == 2.0
    assert s["finish"]["stop"] == 2 and s["finish"]["length"] == 1


def test_table_rows_ratios_unavailable_systems_and_fields_side_by_side():
    ours = summarize_system([score(it, json.dumps(it.expected), "stop", output_tokens=10, latency_s=1.0)
                             for it in ITEMS], wall_s=3.0)                               # 10 tok/s
    peer = summarize_system([score(ITEMS[0], '{"name": "Ann"}', "stop", output_tokens=5, latency_s=2.0),
                             failed(ITEMS[1], "COMPILE_REFUSED", 0.1, "no"),
                             score(ITEMS[2], '{"name": "Cy", "age": 5', "length", output_tokens=10)],
                            wall_s=6.0)                                                 # 2.5 tok/s
    md = render_markdown({("extraction", "structgen"): ours, ("extraction", "hf+llguidance"): peer,
                          ("extraction", "unconstrained"): "failed: boom"}, HEADER, "NOTE")
    lines = md.splitlines()
    (ours_row,) = [ln for ln in lines if ln.startswith("| extraction | structgen |")]
    (peer_row,) = [ln for ln in lines if ln.startswith("| extraction | hf+llguidance |")]
    assert "3 (100.0%)" in ours_row and "6/6 (100.0%)" in ours_row and "| 1.00x |" in ours_row
    assert "1 (33.3%)" in peer_row and "| 0.250x |" in peer_row                          # 2.5 / 10 tok/s
    assert any(ln.startswith("| extraction | unconstrained | not run |") for ln in lines)
    assert "- unconstrained (extraction): failed: boom" in md
    assert "- hf+llguidance (extraction) errors: COMPILE_REFUSED: 1" in md
    # per field: one column per system that ran
    assert "| field | items | structgen | hf+llguidance |" in md
    assert "| person.name | 3 | 100.0% | 33.3% |" in md and "| person.age | 3 | 100.0% | 0.0% |" in md
    assert "NOTE" in md


def test_local_system_runs_items_in_order_and_times_the_whole():
    seen = []

    def run_item(item, max_tokens):
        seen.append((item.item_id, max_tokens))
        return score(item, json.dumps(item.expected), "stop", output_tokens=3)

    results, wall = run_local_system(run_item, "fake", ITEMS, max_tokens=9, progress=False)
    assert seen == [("p0", 9), ("p1", 9), ("p2", 9)] and [r.item_id for r in results] == ["p0", "p1", "p2"]
    assert wall >= 0 and all(r.exact for r in results)


def test_arguments_are_checked_before_anything_runs():
    assert check_args(_args()) is None
    assert "unknown system" in check_args(_args(systems=["structgen", "vllm"]))
    assert "at least one" in check_args(_args(systems=[]))
    assert ">= 1" in check_args(_args(max_tokens=0))
    assert "cpu only" in check_args(_args(engine_config={"quantization": "int8", "device": "cuda"}))
    assert "--engine-config" in check_args(_args(engine_config={"no_such_field": 1}))


def test_command_line_refuses_bad_arguments(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["bench", "quality", "--systems", "structgen,nope", "--out", out]) == 2
    assert "unknown system(s) nope" in capsys.readouterr().err
    assert main(["bench", "quality", "--datasets", str(tmp_path / "absent"), "--out", out]) == 2
    assert main(["bench", "quality", "--engine-config", '{"quantization": "int4"}', "--out", out]) == 2
    assert "quantization" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_real_run_of_every_system_on_two_items(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"schema": SCHEMA, "text": it.text, "expected": it.expected}) + "\n"
                             for it in ITEMS[:2]))
    out = tmp_path / "out"
    rc = main(["bench", "quality", "--systems", ",".join(SYSTEMS), "--datasets", str(items), "--max-tokens", "32",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    records = read_jsonl(out / "results.jsonl")
    assert records[0]["type"] == "header" and records[0]["systems"] == list(SYSTEMS)
    done = [r for r in records if r["type"] == "item"]
    summaries = {r["system"]: r for r in records if r["type"] == "summary"}
    assert set(summaries) == set(SYSTEMS)
    for system, s in summaries.items():
        mine = [r for r in done if r["system"] == system]
        assert len(mine) == 2 == s["requests"] and s["valid"] == sum(r["valid"] for r in mine)
        assert all(r["output_tokens"] <= 32 for r in mine)
    for r in done:
        if r["system"].startswith("structgen"):
            # the budget guard closes every constrained output in time: always a valid value
            assert r["status"] == "OK" and r["finish"] in ("stop", "budget")
            jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(r["text"]))
        elif r["system"] == "hf+llguidance" and r["finish"] == "stop":
            # llguidance ends at EOS only in an accepting state; cut by max_tokens it may be unfinished
            jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(r["text"]))
    md = (out / "summary.md").read_text()
    assert all(f"| {system} |" in md for system in SYSTEMS)
