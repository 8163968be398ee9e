"""`structgen` command line: serve | extract | compile | bench | regress.

Each subcommand lives beside the layer it drives and exposes `add_arguments(parser)` and `run(args) -> int`;
this file only wires them together, so the CLI never grows a second copy of any layer's logic.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Modules are imported only when their subcommand runs.
SUBCOMMANDS = {
    "serve": ("structgen.server.cli", "run the gRPC server (default: the embedded SmolLM2-135M-Instruct)"),
    "cluster": ("structgen.cluster.cli", "N serve replicas behind sglang-router on one port, supervised"),
    "extract": ("structgen.client.cli", "extract JSON from documents with a schema (via a server or --local)"),
    "compile": ("structgen.fsm.cli", "compile a constraint and print its states, compile time and cache status"),
    "bench": ("structgen.bench.cli", "benchmarks: masks | coverage | serve | engine | speculative | extraction"),
    "regress": ("structgen.regress.cli", "regression testing: run a golden set, compare two runs (exit 1 on a "
                                         "regression)"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="structgen", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"structgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"structgen {args.command}: not available in this build", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
