"""`structgen regress run | compare` end to end with the real model: an in-process server, a running server over
gRPC and over HTTP, a deliberately broken candidate caught with exit 1, and an interrupted run that resumes.

The cases are the 11 of data/golden.jsonl at 48 tokens at most, so each run takes seconds; the running server is
the session's `real_server` (tests/conftest.py), so only the in-process baseline loads a second model.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from structgen.cli import main
from structgen.regress.golden import load_golden
from structgen.regress.runner import RESULTS_FILE, RUN_FILE

GOLDEN = Path(__file__).parent / "data" / "golden.jsonl"
RUN = ["regress", "run", "--golden", str(GOLDEN), "--max-tokens", "48", "--no-progress"]


def _results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / RESULTS_FILE).read_text().splitlines()]


def _check_outputs(folder: Path) -> None:
    """Every case answered, every output valid under its constraint (schemas: jsonschema 2020-12, formats)."""
    cases = load_golden(GOLDEN).by_id()
    results = _results(folder)
    assert sorted(r["id"] for r in results) == sorted(cases)
    for r in results:
        case = cases[r["id"]]
        assert r["status"] == "OK", r
        if case.constraint_kind == "schema":
            jsonschema.Draft202012Validator(case.constraint, format_checker=jsonschema.FormatChecker()).validate(
                json.loads(r["text"]))
        elif case.constraint_kind == "regex":
            assert re.fullmatch(case.constraint, r["text"]), r
        else:
            assert r["text"] in case.constraint
        assert r["valid"] is True


def _compare(a: Path, b: Path, *extra) -> int:
    return main(["regress", "compare", str(a), str(b), "--quiet", *extra])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """The baseline: greedy, through an in-process server started by the command itself."""
    out = tmp_path_factory.mktemp("regress") / "base"
    assert main([*RUN, "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_in_process_run_records_outputs_and_the_fingerprint(baseline):
    from structgen.engine.weights_hash import weights_fingerprint

    _check_outputs(baseline)
    meta = json.loads((baseline / RUN_FILE).read_text())
    fp = meta["fingerprint"]
    assert meta["complete"] and meta["golden"]["cases"] == 11
    assert fp["weights_hash"] == weights_fingerprint("default") and len(fp["weights_hash"]) == 64
    assert (fp["dtype"], fp["quantization"], fp["api"]) == ("float32", "none", "grpc")
    assert fp["model"] == "SmolLM2-135M-Instruct" and len(fp["tokenizer_fingerprint"]) == 32
    assert fp["engine_config"]["model"] == "default" and fp["sampling"]["temperature"] == 0.0
    assert all(r["latency_s"] > 0 and r["output_tokens"] > 0 for r in _results(baseline))


@pytest.mark.slow
def test_a_hot_sampling_candidate_on_a_running_server_is_caught(baseline, real_server, real_api_key, tmp_path,
                                                                 capsys):
    cand = tmp_path / "hot"
    assert main([*RUN, "--out", str(cand), "--server", real_server.target, "--api-key", real_api_key,
                 "--temperature", "1.5", "--seed", "7"]) == 0
    _check_outputs(cand)   # sampling hot changes the answers, never their validity
    capsys.readouterr()
    assert _compare(baseline, cand, "--max-latency-ratio", "0") == 1
    err = capsys.readouterr().err
    assert "REGRESSED: agreement with baseline" in err
    md = (cand / "report.md").read_text()
    assert "| sampling.temperature | 0.0 | 1.5 |" in md and "right->wrong" in md
    assert (cand / "report.html").is_file()


@pytest.mark.slow
def test_an_interrupted_run_resumes_only_the_rest_and_matches_the_baseline(baseline, real_server, real_api_key,
                                                                            tmp_path, capsys):
    out = tmp_path / "resumed"
    argv = [*RUN, "--out", str(out), "--server", real_server.target, "--api-key", real_api_key]
    proc = subprocess.Popen([sys.executable, "-m", "structgen.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    results = out / RESULTS_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and results.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)   # Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun the same command to resume" in err
    before = results.read_text()
    k = before.count("\n")
    assert 3 <= k < 11 and all(json.loads(line) for line in before.splitlines())   # whole lines only
    assert json.loads((out / RUN_FILE).read_text())["complete"] is False

    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"resuming {out}: {k} of 11 cases done, {11 - k} to run" in err
    after = results.read_text()
    assert after.startswith(before) and after.count("\n") == 11   # the finished cases were not redone
    _check_outputs(out)
    # the same greedy outputs as the in-process baseline (latency is not the question here)
    assert _compare(baseline, out, "--max-latency-ratio", "0") == 0


@pytest.mark.slow
def test_a_run_over_http_gives_the_same_answers_as_grpc(baseline, real_server, real_api_key, tmp_path):
    out = tmp_path / "http"
    assert main([*RUN, "--out", str(out), "--server", real_server.http_url, "--api-key", real_api_key]) == 0
    _check_outputs(out)
    fp = json.loads((out / RUN_FILE).read_text())["fingerprint"]
    assert fp["api"] == "http" and fp["weights_hash"] == json.loads(
        (baseline / RUN_FILE).read_text())["fingerprint"]["weights_hash"]
    assert _compare(baseline, out, "--max-latency-ratio", "0") == 0


# ------------------------------------------------------------------------------------------ refusals, no model
def test_bad_golden_line_exits_2_with_its_line(tmp_path, capsys):
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "regex": "x"}\n{"id": "b", "prompt": "p"}\n')
    assert main(["regress", "run", "--golden", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"{bad}:2 (id 'b'): a case needs exactly one constraint" in capsys.readouterr().err


def test_engine_options_with_a_server_and_bad_flags_exit_2(tmp_path, capsys):
    base = ["regress", "run", "--golden", str(GOLDEN), "--out", str(tmp_path / "o")]
    assert main([*base, "--server", "localhost:1", "--dtype", "bfloat16"]) == 2
    assert "--dtype" in capsys.readouterr().err
    assert main([*base, "--max-tokens", "0"]) == 2
    assert main([*base, "--max-num-seqs", "0"]) == 2   # EngineConfig's own check, before any model loads
    assert "max_num_seqs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["regress", "run", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert main(["regress"]) == 2


def test_resuming_a_folder_of_another_golden_set_exits_2_before_any_server(tmp_path, capsys):
    from .synthetic import golden, write_run

    other = write_run(tmp_path / "other", golden(3), {})
    assert main([*RUN, "--out", str(other), "--server", "localhost:1"]) == 2
    assert "another golden set" in capsys.readouterr().err
