"""Synthetic run folders for the compare / report tests: written through the runner's own functions (prepare +
results lines), so they have the exact format `structgen regress run` writes, with chosen outcomes."""

from __future__ import annotations

import json
from pathlib import Path

from structgen.regress import runner
from structgen.regress.golden import GoldenSet, golden_digest, parse_case
from structgen.regress.outcome import score_case

SCHEMA = {"title": "inv", "type": "object", "properties": {"total": {"type": "number"}, "cur": {"type": "string"}},
          "required": ["total", "cur"]}


def golden(n: int, *, with_expected: bool = True) -> GoldenSet:
    """n schema cases (expected {"total": i, "cur": "EUR"} when `with_expected`)."""
    docs = [{"id": f"c{i:03d}", "prompt": f"invoice {i}", "schema": SCHEMA}
            | ({"expected": {"total": i, "cur": "EUR"}} if with_expected else {}) for i in range(n)]
    cases = tuple(parse_case(d, f"synthetic:{i + 1}") for i, d in enumerate(docs))
    return GoldenSet("synthetic.jsonl", cases, golden_digest(cases))


def fingerprint(**changes) -> dict:
    fp = {"model": "m", "weights_hash": "w" * 64, "tokenizer_fingerprint": "t" * 32, "dtype": "float32",
          "quantization": "none", "device": "cpu", "structgen_version": "0", "git_commit": "abc", "api": "grpc",
          "concurrency": 1, "sampling": {"temperature": 0.0, "seed": 0, "max_tokens": 64}, "engine_config": {}}
    fp.update(changes)
    return fp


def write_run(folder: Path, g: GoldenSet, outputs: dict[str, str], *, latency: float | dict = 0.5,
              fp: dict | None = None) -> Path:
    """A complete run of `g` whose case `id` answered `outputs[id]` (missing ids: the expected value)."""
    runner.prepare(folder, g, fp or fingerprint(), {"golden": g.path}, fresh=True)
    with open(Path(folder) / runner.RESULTS_FILE, "a") as fh:
        for case in g.cases:
            text = outputs.get(case.case_id, json.dumps(case.expected if case.has_expected
                                                        else {"total": 1, "cur": "EUR"}))
            lat = latency[case.case_id] if isinstance(latency, dict) else latency
            fh.write(json.dumps(score_case(case, text, "stop", latency_s=lat, output_tokens=9).to_json()) + "\n")
    runner.finish(folder, g, 1.0)
    return Path(folder)


def wrong(i: int) -> str:
    return json.dumps({"total": i + 1000, "cur": "EUR"})
