"""`structgen compile`: compile one constraint and print its states, compile time and cache status.

    structgen compile --schema schema.json [--extra-properties] [--property-order any] [--tokenizer DIR]
    structgen compile --regex '\\d{3}-\\d{4}'
    structgen compile --choice yes,no,maybe

Exit code 0 on success, 2 on a bad constraint or bad arguments (the error is printed to stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--schema", metavar="FILE", help="a JSON Schema file ('-' = stdin)")
    what.add_argument("--regex", metavar="R", help="a regular expression (full match)")
    what.add_argument("--choice", metavar="A,B", help="comma-separated choices")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="a folder with tokenizer.json (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--extra-properties", action="store_true",
                        help="allow keys a schema does not declare (the spec's literal reading)")
    parser.add_argument("--property-order", choices=("schema", "any"), default="schema",
                        help="declared properties in `properties` order (default) or in any order")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _fail(msg: str) -> int:
    print(f"structgen compile: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from ..errors import ConstraintError
    from ..tokenizer import Tokenizer, default_tokenizer
    from .api import compile_with_status

    try:
        tokenizer = Tokenizer.from_dir(args.tokenizer) if args.tokenizer else default_tokenizer()
    except (OSError, ValueError) as e:
        return _fail(f"cannot load the tokenizer: {e}")
    options: dict = {}
    if args.schema is not None:
        try:
            text = sys.stdin.read() if args.schema == "-" else Path(args.schema).read_text(encoding="utf-8")
        except OSError as e:
            return _fail(f"cannot read the schema: {e}")
        kind, value = "json_schema", text
        options["extra_properties"] = bool(args.extra_properties)
        if args.property_order != "schema":
            options["property_order"] = args.property_order
    elif args.regex is not None:
        kind, value = "regex", args.regex
    else:
        kind, value = "choice", args.choice.split(",")
    if kind != "json_schema" and (args.extra_properties or args.property_order != "schema"):
        return _fail("--extra-properties and --property-order apply to --schema only")

    start = time.perf_counter()
    try:
        compiled, status = compile_with_status(kind, value, tokenizer, **options)
    except ConstraintError as e:
        return _fail(str(e))
    elapsed_ms = (time.perf_counter() - start) * 1e3
    first = compiled.cursor().allowed_token_ids()
    info = {
        "kind": kind,
        "key": compiled.key,
        "states": compiled.num_states,
        "compile_ms": round(elapsed_ms, 3),
        "cache": status,
        "first_mask_tokens": int(first.size),
        "vocab_size": compiled.vocab_size,
        "tokenizer": getattr(tokenizer, "source", "?"),
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(f"kind:         {kind}")
        print(f"key:          {compiled.key}")
        print(f"states:       {compiled.num_states} (materialized so far; more are built while decoding)")
        print(f"compile time: {elapsed_ms:.1f} ms (time to first mask)")
        print(f"cache:        {status}")
        print(f"first mask:   {first.size} of {compiled.vocab_size} tokens allowed")
    return 0
