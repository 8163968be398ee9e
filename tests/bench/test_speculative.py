"""`structgen bench speculative`'s own logic (no model): config choice, the closed loop and its forward counts,
the row figures and the command's argument errors."""

import json
from types import SimpleNamespace

import pytest

from structgen.bench import speculative as S
from structgen.cli import main
from structgen.engine.outputs import EngineStats, GenerateOutput, Usage


def test_default_configs_add_the_draft_row_only_with_a_draft_model():
    assert S.choose_configs(None, None) == ["base", "forced", "forced+lookup"]
    assert S.choose_configs(None, "self")[-1] == "forced+draft"
    assert S.choose_configs(["forced+lookup", "base"], None) == ["forced+lookup", "base"]
    with pytest.raises(ValueError, match="unknown config 'fast'"):
        S.choose_configs(["fast"], None)
    with pytest.raises(ValueError, match="needs --draft-model"):
        S.choose_configs(["base", "forced+draft"], None)


class _Runner:
    def run(self, scheduled):
        return len(scheduled)


class _FakeEngine:
    """Each request takes `cost` forwards (the first one its prefill) and yields one token per forward."""

    def __init__(self, cost: int):
        self.runner, self.cost = _Runner(), cost
        self.running: dict[str, int] = {}
        self.steps = 0
        self.max_in_flight = 0

    def add_request(self, req):
        self.running[req.request_id] = 0
        self.max_in_flight = max(self.max_in_flight, len(self.running))

    def has_work(self):
        return bool(self.running)

    def stats(self):
        return EngineStats(steps=self.steps)

    def step(self):
        self.steps += 1
        self.runner.run([SimpleNamespace(seq=SimpleNamespace(request_id=rid)) for rid in self.running])
        outs = []
        for rid in list(self.running):
            self.running[rid] += 1
            done = self.running[rid] == self.cost
            outs.append(GenerateOutput(rid, [7], "x", finished=done, finish_reason="stop" if done else None))
            if done:
                del self.running[rid]
        return outs


def test_closed_loop_keeps_the_level_in_flight_and_counts_forwards_per_request():
    eng = _FakeEngine(cost=3)
    real_run = eng.runner.run
    reqs = [SimpleNamespace(request_id=f"r{i}") for i in range(5)]
    res = S.run_closed_loop(eng, reqs, concurrency=2)
    assert eng.max_in_flight == 2
    assert sorted(res["done"]) == [f"r{i}" for i in range(5)]
    assert all(d["forwards"] == 3 and d["tokens"] == [7] * 3 and d["text"] == "xxx" for d in res["done"].values())
    assert res["steps"] == eng.steps and res["wall"] > 0
    assert eng.runner.run == real_run        # the counter is gone after the run


def _done(tokens, forwards, latency, text='{"a": 1}', forced=0, drafted=0, reason="stop"):
    out = GenerateOutput("r", [], "", finished=True, finish_reason=reason,
                         usage=Usage(completion_tokens=len(tokens), forced_tokens=forced,
                                     draft_accepted_tokens=drafted))
    return {"tokens": tokens, "text": text, "forwards": forwards, "latency": latency, "out": out,
            "schema": {"type": "object", "required": ["a"]}}


def test_rows_compare_with_the_baseline():
    base = S.config_row("extraction", 2, "base", [_done([1, 2, 3, 4], 4, 2.0), _done([5, 6], 2, 1.0)], 3.0, None)
    assert (base["forwards_per_token"], base["tokens_per_s"], base["speedup"], base["same"]) == (1.0, 2.0, 1.0, 2)
    fast = S.config_row("extraction", 2, "forced", [
        _done([1, 2, 3, 4], 2, 1.0, forced=2), _done([5, 9], 1, 0.5, text='{"b": 1}', reason="length")],
        1.5, base)
    assert fast["forwards_per_token"] == 0.5 and fast["speedup"] == 2.0 and fast["p50_ratio"] == 0.5
    assert (fast["forced_pct"], fast["valid"], fast["same"]) == (100 * 2 / 6, 1, 1)
    line = S.format_row(fast)
    assert line.startswith("| extraction | 2 | forced | 2 | 6 | 0.500 | 4.0 |") and line.endswith("| 1/2 | 1/2 |")
    assert line.count("|") == S.TABLE_HEADER.count("|")


def test_extraction_and_schema_cases(tmp_path):
    dev = tmp_path / "extraction" / "dev"
    dev.mkdir(parents=True)
    for i in range(3):
        (dev / f"{i:02d}.json").write_text(json.dumps({"schema": {"type": "object"}, "text": f"doc {i}"}))
    cases = S.extraction_cases(tmp_path, 2)
    assert [c.case_id for c in cases] == ["00", "01"] and cases[0].text.endswith("Request: doc 0")
    assert S.extraction_cases(tmp_path / "absent", 2) == []
    (tmp_path / "examples").mkdir()
    (tmp_path / "a.json").write_text('{"type": "object"}')
    (tmp_path / "b.json").write_text('{"type": "object"}')        # no example document: skipped
    (tmp_path / "examples" / "a.txt").write_text("A document")
    assert [c.case_id for c in S.schema_cases(tmp_path, 6)] == ["a"]


def test_bad_arguments_give_a_clear_message(tmp_path, capsys):
    assert main(["bench", "speculative", "--configs", "base,fast", "--out", str(tmp_path)]) == 2
    assert "unknown config 'fast'" in capsys.readouterr().err
    assert main(["bench", "speculative", "--configs", "forced+draft", "--out", str(tmp_path)]) == 2
    assert "needs --draft-model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "speculative", "--concurrency", "0"])
