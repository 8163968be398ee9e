"""`structgen bench masks | coverage | serve | engine | speculative | extraction | quality | hostile | conformance`: one command per benchmark,
peers side by side.

Each mode writes results.jsonl + summary.md (+ a PNG where it draws one) under --out and prints the tables.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import sys
from pathlib import Path

MODES = {
    "masks": ("structgen.bench.masks_cli", "correctness and mask speed on JSONSchemaBench instances, no model"),
    "coverage": ("structgen.bench.coverage", "schema coverage and compliance with the default model"),
    "serve": ("structgen.bench.serve", "throughput and latency against a running server"),
    "engine": ("structgen.bench.engine", "engine micro-benchmarks (decode step, masking overhead)"),
    "speculative": ("structgen.bench.speculative",
                    "plain decoding vs forced runs vs prompt lookup (vs a draft model): forwards per token, tok/s"),
    "extraction": ("structgen.bench.extraction",
                   "extraction quality through a server and the SDK's extract: valid values, finish reasons, "
                   "exact match, per-field accuracy"),
    "quality": ("structgen.bench.quality",
                "extraction quality beside peers on the same model and data: structgen, the unconstrained model, "
                "transformers + llguidance (validity, exact match, per-field accuracy, tok/s)"),
    "conformance": ("structgen.bench.conformance",
                    "JSON-Schema-Test-Suite per keyword and jsonschemabench dev per split: compiled / passing, "
                    "token walks through the cursor, no model"),
    "cluster": ("structgen.bench.cluster",
                "sglang-router policies side by side on N local replicas: prefix-cache hit rate, cluster tok/s"),
    "hostile": ("structgen.bench.hostile",
                "bad and extreme inputs against a server: every call ends with a clear status in its deadline, "
                "good requests still answered, memory sampled"),
}


def default_out_dir(mode: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("benchmarks") / "out" / f"{mode}-{stamp}"  # git-ignored; RESULTS.md keeps the tables


def csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def int_list(value: str) -> list[int]:
    try:
        out = [int(v) for v in csv_list(value)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from e
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return out


def json_object(value: str) -> dict:
    try:
        out = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from e
    if not isinstance(out, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return out


def add_common(p: argparse.ArgumentParser, mode: str) -> None:
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default: benchmarks/out/{mode}-<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_mode", metavar="MODE")
    for mode, (module, help_text) in MODES.items():
        p = sub.add_parser(mode, help=help_text, description=help_text)
        p.set_defaults(_bench_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_bench_missing=True)


def run(args: argparse.Namespace) -> int:
    mode = getattr(args, "bench_mode", None)
    if not mode:
        print("structgen bench: choose a mode: " + " | ".join(MODES), file=sys.stderr)
        return 2
    if getattr(args, "_bench_missing", False):
        print(f"structgen bench {mode}: not available in this build", file=sys.stderr)
        return 2
    if hasattr(args, "out") and args.out is None:
        args.out = default_out_dir(mode)
    return int(importlib.import_module(args._bench_module).run(args) or 0)


__all__ = ["add_arguments", "run", "add_common", "csv_list", "int_list", "json_object"]
