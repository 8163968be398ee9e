"""structgen/bench/masks.py: the mask benchmark counts what happened, per schema, and cannot measure nothing."""

import json

import jsonschema
import pytest

import structgen
from structgen.bench.cases import Instance, SchemaCase, instance_text
from structgen.bench.masks import classify, make_tasks, render_markdown, run_engine, summarize_run, write_outputs
from structgen.bench.report import read_jsonl

from . import fake_engines as fakes

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name"]}
TINY = [
    SchemaCase("S1", "S1/0000.json", PERSON, (Instance({"name": "Zoë", "age": 3}, True),
                                             Instance({"age": 3}, False))),
    SchemaCase("S1", "S1/0001.json", {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
               (Instance([True, False], True), Instance([True, True, True], False), Instance([], True))),
    SchemaCase("S2", "S2/0000.json", {"enum": ["a", "b"]}, (Instance("a", True), Instance("c", False))),
]


@pytest.fixture(scope="module")
def tokenizer():
    return structgen.default_tokenizer()


@pytest.fixture(scope="module")
def tiny_tasks(tokenizer):
    for case in TINY:  # the labels themselves must be right, or the test proves nothing
        for inst in case.instances:
            assert jsonschema.Draft202012Validator(case.schema).is_valid(inst.data) == inst.valid
    return make_tasks(TINY, tokenizer)


def _expected_masks(tasks):
    # one mask before every token of every instance, plus the end-of-text mask
    return sum(len(toks) + 1 for t in tasks for toks in t["tokens"])


def _spec(name):
    return f"{fakes.__name__}:{name}"


def test_tasks_carry_the_same_token_ids_for_every_engine(tokenizer, tiny_tasks):
    assert [t["case_id"] for t in tiny_tasks] == [c.case_id for c in TINY]
    first = tiny_tasks[0]
    assert first["valid"] == [True, False]
    assert tokenizer.decode(first["tokens"][0]) == '{"name":"Zoë","age":3}'
    assert instance_text({"a": [1, "é"]}) == '{"a":[1,"é"]}'


@pytest.mark.parametrize("engine,expected", [
    ("OracleEngine", ["passing", "passing", "passing"]),
    ("LaxEngine", ["invalidation_error", "invalidation_error", "invalidation_error"]),
    ("StrictEngine", ["validation_error", "validation_error", "validation_error"]),
    ("SilentEngine", ["validation_error", "validation_error", "validation_error"]),
])
def test_outcomes_follow_the_engine_behaviour(tiny_tasks, engine, expected):
    run = run_engine(_spec(engine), tiny_tasks, timeout_s=30, progress=False)
    assert run.unavailable is None
    assert [r["status"] for r in run.rows] == expected
    overall, per_split = summarize_run(run)
    assert overall["schemas"] == 3 and overall[expected[0]] == 3
    assert per_split["S1"]["schemas"] == 2 and per_split["S2"]["schemas"] == 1
    assert all(r["ttfm_s"] > 0 for r in run.rows)
    if engine == "OracleEngine":
        # every mask of every walk was timed, no more, no less
        assert overall["tbm"]["n"] == _expected_masks(tiny_tasks)
        assert [r["valid_rejected"] for r in run.rows] == [0, 0, 0]
    if engine == "LaxEngine":
        assert [r["invalid_accepted"] for r in run.rows] == [1, 1, 1]


def test_hang_crash_and_compile_error_are_counted_and_the_run_goes_on(tokenizer):
    cases = [
        SchemaCase("S", "S/hang.json", {"x-hang": True}, (Instance(1, True),)),
        SchemaCase("S", "S/ok.json", {"type": "integer"}, (Instance(1, True), Instance("x", False))),
        SchemaCase("S", "S/crash.json", {"x-crash": True}, (Instance(1, True),)),
        SchemaCase("S", "S/unsupported.json", {"x-unsupported": True}, (Instance(1, True),)),
        SchemaCase("S", "S/ok2.json", {"type": "string"}, (Instance("x", True),)),
    ]
    run = run_engine(_spec("OracleEngine"), make_tasks(cases, tokenizer), timeout_s=3, progress=False)
    assert [r["status"] for r in run.rows] == ["timeout", "passing", "error", "compile_error", "passing"]
    assert "x-unsupported" in run.rows[3]["error"]
    overall, _ = summarize_run(run)
    assert (overall["passing"], overall["timeout"], overall["error"], overall["compile_error"]) == (2, 1, 1, 1)
    assert overall["ttfm"]["n"] == 2  # timeouts and failures have no time to first mask


def test_missing_engine_is_reported_not_raised(tiny_tasks):
    run = run_engine(_spec("broken_factory"), tiny_tasks, timeout_s=5, progress=False)
    assert run.rows == [] and "enginethatisnotthere" in run.unavailable


def test_classify_ranks_validation_errors_first():
    walks = [{"valid": True, "accepted": False}, {"valid": False, "accepted": True}]
    assert classify(walks) == "validation_error"
    assert classify(walks[1:]) == "invalidation_error"
    assert classify([]) == "passing"


def test_real_peer_llguidance_passes_tiny_schemas_and_times_every_mask(tiny_tasks):
    pytest.importorskip("llguidance")
    run = run_engine("llguidance", tiny_tasks, timeout_s=60, progress=False)
    assert [r["status"] for r in run.rows] == ["passing"] * 3
    overall, _ = summarize_run(run)
    assert overall["tbm"]["n"] == sum(
        # invalid walks stop at the refused token, so count from the rows: valid walks are complete
        r["n_masks"] for r in run.rows)
    assert overall["tbm"]["n"] >= sum(len(toks) + 1 for t in tiny_tasks
                                      for toks, ok in zip(t["tokens"], t["valid"]) if ok)


def test_outputs_hold_tables_jsonl_and_png(tmp_path, tiny_tasks):
    runs = [run_engine(_spec("OracleEngine"), tiny_tasks, timeout_s=30, progress=False),
            run_engine(_spec("broken_factory"), tiny_tasks, timeout_s=5, progress=False)]
    header = {"command": "structgen bench masks --test", "date": "d", "commit": "c", "cpu": "cpu", "cores": 2,
              "gpu": "none"}
    paths = write_outputs(runs, header, tmp_path)
    records = read_jsonl(paths["jsonl"])
    assert records[0]["type"] == "header"
    engines = [r for r in records if r["type"] == "engine"]
    assert engines[0]["passing"] == 3 and "unavailable" in engines[1]
    assert len([r for r in records if r["type"] == "schema"]) == 3
    md = paths["markdown"].read_text()
    assert "structgen bench masks --test" in md and "not installed" in md
    oracle_line = next(line for line in md.splitlines() if line.startswith(f"| {_spec('OracleEngine')} | 3 |"))
    assert "3 (100.0%)" in oracle_line
    assert paths["png"].stat().st_size > 1000
    json.dumps(records)  # JSON-clean (no NaN)


def test_render_puts_ratios_against_structgen(tiny_tasks):
    from structgen.bench.masks import EngineRun

    import numpy as np

    a = EngineRun("structgen", rows=[{"split": "S", "status": "passing", "ttfm_s": 0.010}])
    a.mask_times["S"].append(np.array([1e-5, 1e-5]))
    b = EngineRun("peer", rows=[{"split": "S", "status": "passing", "ttfm_s": 0.030}])
    b.mask_times["S"].append(np.array([4e-5, 4e-5]))
    md = render_markdown([a, b], {"command": "x", "date": "d", "commit": "c", "cpu": "c", "cores": 1, "gpu": "-"})
    peer_line = next(line for line in md.splitlines() if line.startswith("| peer |"))
    assert peer_line.rstrip(" |").endswith("3.00x | 4.00x")


def test_structgen_passes_tiny_schemas_through_its_public_api(tiny_tasks):
    run = run_engine("structgen", tiny_tasks, timeout_s=120, progress=False,
                     structgen_options={"extra_properties": True})
    assert run.unavailable is None
    assert [r["status"] for r in run.rows] == ["passing"] * 3
    assert summarize_run(run)[0]["tbm"]["n"] == sum(r["n_masks"] for r in run.rows) > 0


def test_structgen_fills_are_split_into_first_visits_and_cached(tiny_tasks):
    from structgen.bench.masks import first_visit_split

    run = run_engine("structgen", tiny_tasks + tiny_tasks[:1], timeout_s=120, progress=False,
                     structgen_options={"extra_properties": True})
    split = first_visit_split(run)
    assert split["first"]["n"] + split["cached"]["n"] == summarize_run(run)[0]["tbm"]["n"]
    # every walk of a schema starts on masks built by its compile or an earlier walk: some fills are cached, and
    # the first walk of each schema meets new states
    assert split["first"]["n"] > 0 and split["cached"]["n"] > 0
    md = render_markdown([run], {"command": "x", "date": "d", "commit": "c", "cpu": "c", "cores": 1, "gpu": "-"})
    assert "### First visits and cached masks" in md and "| structgen | first visit |" in md


def test_engines_without_first_visit_get_no_split(tiny_tasks):
    from structgen.bench.masks import first_visit_split

    run = run_engine(_spec("OracleEngine"), tiny_tasks, timeout_s=30, progress=False)
    assert first_visit_split(run) is None
    assert "First visits" not in render_markdown([run], {"command": "x", "date": "d", "commit": "c", "cpu": "c",
                                                         "cores": 1, "gpu": "-"})
