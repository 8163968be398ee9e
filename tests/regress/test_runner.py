"""The runner's own logic (run folder, incremental results, resume, refusals) with a scripted sender; the real
server paths are in test_cli.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from structgen.regress import runner
from structgen.regress.outcome import score_case

from .synthetic import fingerprint, golden


class ScriptedSender:
    """Answers each case with its expected value; raises KeyboardInterrupt at the `stop_at`-th call (a Ctrl-C
    arriving while a request is in flight)."""

    api = "grpc"

    def __init__(self, stop_at: int | None = None):
        self.sent: list[str] = []
        self.stop_at = stop_at

    async def send(self, case):
        if self.stop_at is not None and len(self.sent) + 1 == self.stop_at:
            raise KeyboardInterrupt
        self.sent.append(case.case_id)
        return score_case(case, json.dumps(case.expected), "stop", latency_s=0.01)


def _run(sender, g, folder, done=()):
    todo = [c for c in g.cases if c.case_id not in done]
    return asyncio.run(runner.run_cases(sender, todo, folder, concurrency=1, progress=False))


def test_interrupted_run_keeps_whole_lines_and_resumes_only_the_rest(tmp_path):
    g = golden(6)
    done = runner.prepare(tmp_path, g, fingerprint(), {}, fresh=False)
    assert done == set()
    with pytest.raises(KeyboardInterrupt):
        _run(ScriptedSender(stop_at=4), g, tmp_path)
    results, partial = runner.read_results(tmp_path)
    assert sorted(results) == ["c000", "c001", "c002"] and not partial
    done = runner.prepare(tmp_path, g, fingerprint(), {}, fresh=False)
    assert done == {"c000", "c001", "c002"}
    second = ScriptedSender()
    assert _run(second, g, tmp_path, done) == 3
    assert second.sent == ["c003", "c004", "c005"]
    meta = runner.finish(tmp_path, g, 1.0)
    assert meta["complete"] and len(runner.read_results(tmp_path)[0]) == 6


def test_a_partial_last_line_is_dropped_and_that_case_rerun(tmp_path):
    g = golden(4)
    runner.prepare(tmp_path, g, fingerprint(), {}, fresh=False)
    _run(ScriptedSender(), g, tmp_path)
    path = tmp_path / runner.RESULTS_FILE
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 40])   # killed mid-write of the last line
    assert runner.read_results(tmp_path)[1] is True
    done = runner.prepare(tmp_path, g, fingerprint(), {}, fresh=False)
    assert done == {"c000", "c001", "c002"}
    assert path.read_bytes().endswith(b"\n") and runner.read_results(tmp_path)[1] is False


def test_resume_refuses_another_configuration_or_set_unless_fresh(tmp_path):
    g = golden(3)
    runner.prepare(tmp_path, g, fingerprint(), {}, fresh=False)
    _run(ScriptedSender(), g, tmp_path)
    with pytest.raises(runner.RunDirError, match=r"another configuration \(dtype: 'float32' -> 'bfloat16'"):
        runner.prepare(tmp_path, g, fingerprint(dtype="bfloat16"), {}, fresh=False)
    with pytest.raises(runner.RunDirError, match="sampling.temperature"):
        runner.prepare(tmp_path, g, fingerprint(sampling={"temperature": 1.5, "seed": 0, "max_tokens": 64}), {},
                       fresh=False)
    with pytest.raises(runner.RunDirError, match="another golden set"):
        runner.check_golden_matches(tmp_path, golden(4))
    assert runner.prepare(tmp_path, g, fingerprint(dtype="bfloat16"), {}, fresh=True) == set()
    assert runner.read_results(tmp_path) == ({}, False)
    _run(ScriptedSender(), g, tmp_path)
    (tmp_path / runner.RUN_FILE).unlink()
    with pytest.raises(runner.RunDirError, match="no run.json"):
        runner.prepare(tmp_path, g, fingerprint(), {}, fresh=False)


def test_concurrent_cases_are_each_recorded_once(tmp_path):
    g = golden(9)
    runner.prepare(tmp_path, g, fingerprint(), {}, fresh=False)
    sender = ScriptedSender()
    n = asyncio.run(runner.run_cases(sender, list(g.cases), tmp_path, concurrency=4, progress=False))
    results, partial = runner.read_results(tmp_path)
    assert n == 9 and sorted(results) == sorted(c.case_id for c in g.cases) and not partial
    assert len((tmp_path / runner.RESULTS_FILE).read_text().splitlines()) == 9
