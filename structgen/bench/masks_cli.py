"""Arguments and driver of `structgen bench masks` (the measuring itself is in masks.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cases import default_data_dir, load_schema_cases
from .peers import PEER_NAMES
from .report import run_header


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_common, csv_list, json_object

    p.add_argument("--data", type=Path, default=None,
                   help="jsonschemabench dev folder (default: ../shared/data/jsonschemabench/dev)")
    p.add_argument("--splits", type=csv_list, default=None, help="comma-separated splits (default: all)")
    p.add_argument("--engines", type=csv_list, default=list(PEER_NAMES),
                   help="comma-separated: structgen,llguidance,xgrammar,outlines (or module:factory)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per schema and engine (default 10)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes per engine (default 1: engines never share a core's time)")
    p.add_argument("--sample", type=int, default=5,
                   help="seeded random schemas per split (default 5, a few minutes on 2 cores; 0 = every schema)")
    p.add_argument("--limit", type=int, default=0, help="at most N schemas in total, spread over splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--structgen-options", type=json_object, default={"extra_properties": True},
                   help='JSON options for structgen.compile_json_schema (default {"extra_properties": true}: '
                        "JSON Schema's own default, as the labelled instances assume)")
    add_common(p, "masks")


def run(args: argparse.Namespace) -> int:
    from structgen import default_tokenizer

    from .masks import make_tasks, render_markdown, run_engine, write_outputs

    data_dir = args.data or (default_data_dir() / "jsonschemabench" / "dev")
    try:
        cases = load_schema_cases(data_dir, args.splits, sample=args.sample, limit=args.limit, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"structgen bench masks: {e}", file=sys.stderr)
        return 2
    if args.jobs < 1 or args.timeout <= 0:
        print("structgen bench masks: --jobs must be >= 1 and --timeout > 0", file=sys.stderr)
        return 2
    header = run_header()
    tasks = make_tasks(cases, default_tokenizer())
    n_instances = sum(len(t["valid"]) for t in tasks)
    print(f"masks: {len(tasks)} schemas, {n_instances} instances, engines {', '.join(args.engines)}",
          file=sys.stderr)
    runs = []
    for spec in args.engines:
        run_ = run_engine(spec, tasks, timeout_s=args.timeout, jobs=args.jobs,
                          structgen_options=args.structgen_options, progress=not args.no_progress)
        if run_.unavailable:
            print(f"masks: {spec}: not installed / unavailable: {run_.unavailable}", file=sys.stderr)
        runs.append(run_)
    paths = write_outputs(runs, header, args.out)
    print(render_markdown(runs, header))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
