"""Micro-benchmark behind `dispatch.KernelBackends.linear`: `F.linear(x, W)`, the weight-major form `(W @ x.T).T`
and the native kernel (`structgen.kernels.cpu_gemm`) for every weight shape of a model, at the row counts a decode
or verify step has.

On CPU, MKL runs `x @ W.T` with few rows on one thread; the weight-major product is split over W's rows, so it
uses every core; the native kernel streams each weight row once for all of x's rows. The table shows where each
form wins; dispatch's NATIVE_ROWS and SMALL_ROWS thresholds are read from it. Forms and row counts are interleaved
round by round, so machine noise falls on all alike; each cell is the median over rounds of one pass through
`--layers` distinct weights (cold in cache, as in a real forward).

    .venv/bin/python benchmarks/bench_linear.py [--model default] [--rows 1 2 4 8 16 32 64] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from structgen.engine.model_config import ModelConfig
from structgen.kernels import cpu_gemm


def weight_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    h = cfg.hidden_size
    return {"qkv": (cfg.q_size + 2 * cfg.kv_size, h), "o": (h, cfg.q_size),
            "gate_up": (2 * cfg.intermediate_size, h), "down": (h, cfg.intermediate_size),
            "logits": (cfg.vocab_size, h)}


def weight_major(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.mm(w, x.t()).t().contiguous()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="'default' or a model folder (only config.json is read)")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--layers", type=int, default=0, help="distinct weights per layer shape (0 = the model's)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "default":
        from structgen.assets import prepare_default_model

        folder = prepare_default_model()
    else:
        folder = args.model
    cfg = ModelConfig.from_file(Path(folder) / "config.json")
    g = torch.Generator().manual_seed(0)
    layers = args.layers or cfg.num_layers
    weights = {name: [torch.randn(*shape, generator=g) for _ in range(1 if name == "logits" else layers)]
               for name, shape in weight_shapes(cfg).items()}
    forms = [("linear", F.linear), ("weight-major", weight_major)]
    if cpu_gemm.available():
        forms.append(("native", cpu_gemm.skinny_linear))
    else:
        print(f"(native kernel unavailable: {cpu_gemm.unavailable_reason()})")
    times: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(args.rounds):
        for m in args.rows:
            for name, ws in weights.items():
                x = torch.randn(m, ws[0].shape[1], generator=g)
                for form, fn in forms:
                    fn(x, ws[0])
                    t0 = time.perf_counter()
                    for w in ws:
                        fn(x, w)
                    times.setdefault((name, m, form), []).append((time.perf_counter() - t0) / len(ws))
    names = [f for f, _ in forms]
    print(f"# {' vs '.join(names)}, {folder}, {torch.get_num_threads()} threads, ms per matmul "
          f"(median of {args.rounds} rounds)\n")
    print("| weight | shape | " + " | ".join(f"{m} rows" for m in args.rows) + " |")
    print("|---|---|" + "---|" * len(args.rows))
    for name, ws in weights.items():
        cells = []
        for m in args.rows:
            ms = [statistics.median(times[(name, m, f)]) * 1e3 for f in names]
            cells.append(" / ".join(f"{t:.2f}" for t in ms)
                         + " (" + ", ".join(f"{ms[0] / t:.2f}x" for t in ms[1:]) + ")")
        print(f"| {name} | {tuple(ws[0].shape)} | " + " | ".join(cells) + " |")
    print(f"\ncells: {' ms / '.join(names)} ms (speedup of each over F.linear)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
