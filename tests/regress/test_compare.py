"""compare on synthetic run folders: verdicts and exit codes (0 / 1 / 2) through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from structgen.cli import main
from structgen.regress.compare import compare_dirs
from structgen.regress.runner import RESULTS_FILE, RUN_FILE, RunDirError

from .synthetic import fingerprint, golden, write_run, wrong


def _cli(*argv) -> int:
    return main(["regress", "compare", *map(str, argv), "--quiet"])


def test_identical_runs_exit_0_and_write_both_reports(tmp_path):
    g = golden(20)
    a, b = write_run(tmp_path / "a", g, {}), write_run(tmp_path / "b", g, {})
    assert _cli(a, b) == 0
    md = (b / "report.md").read_text()
    assert "Verdict: no regression" in md and "fingerprints are identical" in md
    assert (b / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_regressed_candidate_exits_1_and_the_report_names_the_flips(tmp_path):
    g = golden(30)
    base = write_run(tmp_path / "base", g, {})
    cand = write_run(tmp_path / "cand", g, {f"c{i:03d}": wrong(i) for i in range(8)},
                     fp=fingerprint(quantization="int8", dtype="bfloat16"))
    assert _cli(base, cand, "--out", tmp_path / "rep") == 1
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "REGRESSED" in md and "exact match" in md
    assert "| quantization | none | int8 |" in md and "| dtype | float32 | bfloat16 |" in md
    assert "c000" in md and "exact: right->wrong" in md and "inv.total" in md
    r = compare_dirs(base, cand)
    exact = next(m for m in r.metrics if m.name == "exact match")
    assert (exact.right_to_wrong, exact.wrong_to_right, exact.baseline_right, exact.candidate_right) == (8, 0, 30, 22)
    assert exact.ci[1] < 0 and exact.p_value == pytest.approx(2 / 256)


def test_noise_sized_difference_exits_0(tmp_path):
    g = golden(40)
    base = write_run(tmp_path / "base", g, {"c000": wrong(0), "c001": wrong(1)})
    cand = write_run(tmp_path / "cand", g, {"c002": wrong(2), "c003": wrong(3), "c004": wrong(4)})
    r = compare_dirs(base, cand)
    exact = next(m for m in r.metrics if m.name == "exact match")
    assert exact.diff < 0 and -exact.diff > 0.02   # a 2.5-point drop: past the size threshold, but not significant
    assert not r.regressed and _cli(base, cand) == 0


def test_a_new_invalid_output_regresses_outright(tmp_path):
    g = golden(50)
    base = write_run(tmp_path / "base", g, {})
    cand = write_run(tmp_path / "cand", g, {"c007": '{"total": 7'})
    r = compare_dirs(base, cand)
    assert [g.name for g in r.gates if g.regressed] == ["valid output"]
    assert "c007" in r.verdict_line()
    assert _cli(base, cand) == 1


def test_latency_ratio_gate(tmp_path):
    g = golden(10)
    base = write_run(tmp_path / "base", g, {}, latency=0.5)
    cand = write_run(tmp_path / "cand", g, {}, latency=0.9)
    assert _cli(base, cand) == 1
    assert _cli(base, cand, "--max-latency-ratio", "2") == 0
    assert _cli(base, cand, "--max-latency-ratio", "0") == 0   # not gated
    assert compare_dirs(base, cand).latency["p50_ratio"] == pytest.approx(1.8)


def test_cases_without_expected_compare_by_agreement_with_the_baseline(tmp_path):
    g = golden(12, with_expected=False)
    base = write_run(tmp_path / "base", g, {})
    same = write_run(tmp_path / "same", g, {f"c{i:03d}": '{"cur":"EUR","total":1.0}' for i in range(12)})
    r = compare_dirs(base, same)
    agree = next(m for m in r.metrics if m.name == "agreement with baseline")
    assert agree.candidate_rate == 1.0 and not r.regressed   # key order and 1 vs 1.0 are the same value
    changed = write_run(tmp_path / "chg", g, {f"c{i:03d}": wrong(i) for i in range(12)})
    r = compare_dirs(base, changed)
    assert next(m for m in r.metrics if m.name == "agreement with baseline").candidate_rate == 0.0
    assert r.regressed and "no expected answer" in " ".join(r.notes)


def test_bad_input_exits_2(tmp_path, capsys):
    g = golden(5)
    base = write_run(tmp_path / "base", g, {})
    assert _cli(base, tmp_path / "missing") == 2
    assert "run folder not found" in capsys.readouterr().err
    other = write_run(tmp_path / "other", golden(6), {})
    assert _cli(base, other) == 2
    assert "different golden sets" in capsys.readouterr().err
    partial = write_run(tmp_path / "partial", g, {})
    lines = (partial / RESULTS_FILE).read_text().splitlines()
    (partial / RESULTS_FILE).write_text("\n".join(lines[:3]) + "\n")
    assert _cli(base, partial) == 2
    assert "incomplete run (3 of 5 cases)" in capsys.readouterr().err
    (partial / RUN_FILE).write_text("{broken")
    assert _cli(base, partial) == 2
    assert _cli(base, base, "--max-accuracy-drop", "2") == 2
    with pytest.raises(SystemExit) as e:
        main(["regress", "compare", str(base)])
    assert e.value.code == 2


def test_malformed_results_line_is_named(tmp_path):
    g = golden(3)
    run = write_run(tmp_path / "r", g, {})
    text = (run / RESULTS_FILE).read_text().splitlines()
    text[1] = json.dumps({"id": "c001"})
    (run / RESULTS_FILE).write_text("\n".join(text) + "\n")
    with pytest.raises(RunDirError, match=r"results.jsonl:2: not a result line"):
        compare_dirs(run, run)
