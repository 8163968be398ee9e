"""`structgen extract`: documents + a JSON Schema -> one JSON value per document on stdout (pipes into jq).

    structgen extract --schema schemas/invoice.json schemas/examples/invoice.txt
    cat mail.txt | structgen extract --schema schemas/support_ticket.json -
    structgen extract --local --schema schemas/receipt.json scans/*.txt     # a server in this process, for this run

Each input that works prints one line: its extracted value as compact JSON, in input order. An input that
fails prints nothing on stdout and one line on stderr naming it; the exit code is 1 if any failed. A value the
token budget closed (finish reason "budget": valid, but cut short) is printed like any other, with a warning on
stderr naming the input; it does not change the exit code.
`--local` starts a real server in-process on a free loopback port and asks it through the same `Client`, so
both modes take one request path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Iterator

from .. import settings


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("inputs", nargs="*", metavar="FILE",
                   help="documents to extract from; '-' (or none) reads one document from stdin")
    p.add_argument("--schema", required=True, help="JSON Schema file (e.g. schemas/invoice.json)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of a structgen server; several replicas comma-separated (H1:P1,H2:P2: balanced, with failover), or dns:///NAME:PORT")
    where.add_argument("--local", action="store_true",
                       help="start a server in this process for this run (loads --model) instead of --server")
    p.add_argument("--instructions", default=None, help="extra instructions for the model")
    p.add_argument("--max-tokens", type=int, default=None, help="most tokens per output (default: 1024)")
    p.add_argument("--concurrency", type=int, default=8, help="documents in flight at once (default: 8)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per document")
    p.add_argument("--api-key-file", default=None,
                   help="file holding the server's API key (also: STRUCTGEN_API_KEY)")
    p.add_argument("--model", default="default", help="--local: 'default' or a model folder / GGUF file")
    p.add_argument("--device", default="auto", help="--local: auto | cpu | cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    s = p.add_argument_group("sampling (default: greedy, the DRY loop guard at 0.8, no other penalties)")
    for flag, kind, text in SAMPLING_FLAGS:
        s.add_argument(flag, type=kind, default=None, help=text)
    s.add_argument("--logit-bias", action="append", default=None, metavar="TOKEN_ID=BIAS",
                   help="add BIAS (in [-100, 100]) to a token's logit; repeat for several tokens")


# (flag, type, help); dest = the SDK keyword argument of the same name (the engine's SamplingParams field).
SAMPLING_FLAGS = (
    ("--temperature", float, "sampling temperature (0 = greedy, the default)"),
    ("--top-p", float, "nucleus sampling mass in (0, 1]"),
    ("--top-k", int, "keep only the k most likely tokens (0 = no limit)"),
    ("--seed", int, "seed for reproducible sampling"),
    ("--frequency-penalty", float, "OpenAI frequency penalty in [-2, 2], over the output"),
    ("--presence-penalty", float, "OpenAI presence penalty in [-2, 2], over the output"),
    ("--repetition-penalty", float, "HF/vLLM repetition penalty > 0 over prompt + output (1 = off)"),
    ("--min-p", float, "min-p in [0, 1] (0 = off)"),
    ("--dry-multiplier", float,
     "DRY repetition guard strength (extract's default 0.8; 0 = off); never penalizes copying the document"),
    ("--dry-base", float, "DRY: penalty growth per repeated token, > 1 (default 1.75)"),
    ("--dry-allowed-length", int, "DRY: repeats this long are free (default 2)"),
    ("--dry-range", int, "DRY: output tokens searched for repeats (0 = all, the default)"),
)


def sampling_options(args) -> dict:
    """The SDK sampling keyword arguments the user gave (flags left out keep the server's defaults)."""
    options = {}
    for flag, _, _ in SAMPLING_FLAGS:
        name = flag[2:].replace("-", "_")
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    if args.logit_bias:
        bias = {}
        for item in args.logit_bias:
            token, sep, value = item.partition("=")
            try:
                bias[int(token)] = float(value)
            except ValueError:
                raise ValueError(f"--logit-bias takes TOKEN_ID=BIAS (e.g. 198=-5), got {item!r}") from None
            if not sep:
                raise ValueError(f"--logit-bias takes TOKEN_ID=BIAS (e.g. 198=-5), got {item!r}")
        options["logit_bias"] = bias
    return options


def _read_inputs(names: list[str]) -> list[tuple[str, str | None, str | None]]:
    """(name, text, read error) per input, in order."""
    out = []
    for name in names or ["-"]:
        if name == "-":
            out.append(("<stdin>", sys.stdin.read(), None))
            continue
        try:
            out.append((name, Path(name).read_text(encoding="utf-8"), None))
        except (OSError, UnicodeDecodeError) as e:
            out.append((name, None, f"cannot read: {e}"))
    return out


def _api_key(path: str | None) -> str | None:
    if path:
        key = Path(path).read_text().strip()
        if not key:
            raise ValueError(f"API key file {path} is empty")
        return key
    return settings.get("STRUCTGEN_API_KEY") or None


@contextlib.contextmanager
def _server(args) -> Iterator[tuple[str, str | None]]:
    """(target, API key) of the server to ask: the one at --server, or a real one started in-process (--local)."""
    if not args.local:
        yield args.server, _api_key(args.api_key_file)
        return
    from .local import local_server

    with local_server(args.model, args.device, in_flight=args.concurrency, max_tokens=args.max_tokens) as srv:
        yield srv.target, srv.api_key


def _extract(target: str, api_key: str | None, args, task, texts: list[str]) -> list:
    from .sync import Client

    with Client(target, api_key=api_key, timeout=args.timeout) as client:
        return [(r.value, r.error, r.closed_by_budget) for r in client.extract_many(
            texts, task.model or task.schema, concurrency=args.concurrency, progress=not args.no_progress,
            instructions=task.instructions, max_tokens=args.max_tokens, timeout=args.timeout,
            **sampling_options(args))]


def schema_problem(schema, error: "jsonschema.SchemaError") -> str:
    """What is wrong with `schema`, as a server would say it: the keyword and the JSON pointer of the subschema
    holding it (`'minimum' must be a number (at '#/properties/age')`).

    The words are the schema compiler's (structgen.fsm, the code a server runs on the same schema); jsonschema's
    own message, with the keyword and pointer its error gives, only where the compiler takes the schema.
    """
    from ..errors import InvalidSchemaError
    from ..fsm.json_schema import schema_automaton
    from ..fsm.json_schema.normalize import pointer_str

    try:
        schema_automaton(schema)  # builds states lazily: this only reads the schema
    except InvalidSchemaError as e:
        return str(e)
    except Exception:  # noqa: BLE001  (unsupported, too complex, ...: not what is wrong with it as a schema)
        pass
    path = tuple(error.path)  # to the offending keyword's value
    keyword = path[-1] if path else error.validator
    return str(InvalidSchemaError(f"'{keyword}': {error.message}", pointer_str(path[:-1])))


def run(args) -> int:
    import jsonschema

    from ..errors import StructgenError
    from .extraction import ExtractionTask

    if args.concurrency < 1:
        print("structgen extract: --concurrency must be >= 1", file=sys.stderr)
        return 2
    if args.max_tokens is not None and args.max_tokens < 1:
        print("structgen extract: --max-tokens must be >= 1", file=sys.stderr)
        return 2
    try:
        sampling_options(args)
    except ValueError as e:
        print(f"structgen extract: {e}", file=sys.stderr)
        return 2
    try:
        schema = json.loads(Path(args.schema).read_text(encoding="utf-8"))
        task = ExtractionTask.of(schema, args.instructions)
    except (OSError, json.JSONDecodeError, TypeError) as e:
        print(f"structgen extract: cannot use schema {args.schema}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # jsonschema.SchemaError: not a valid JSON Schema
        why = schema_problem(schema, e) if isinstance(e, jsonschema.SchemaError) else getattr(e, "message", e)
        print(f"structgen extract: {args.schema} is not a valid JSON Schema: {why}", file=sys.stderr)
        return 2
    inputs = _read_inputs(args.inputs)
    readable = [(i, text) for i, (_, text, err) in enumerate(inputs) if err is None]
    try:
        with _server(args) as (target, api_key):
            results = _extract(target, api_key, args, task, [t for _, t in readable])
    except (StructgenError, ValueError, OSError) as e:
        print(f"structgen extract: {e}", file=sys.stderr)
        return 1
    by_index = {i: r for (i, _), r in zip(readable, results)}
    failed = 0
    for i, (name, _, read_error) in enumerate(inputs):
        value, error, closed_by_budget = by_index.get(i, (None, read_error, False))
        if error is not None:
            failed += 1
            print(f"structgen extract: {name}: {error}", file=sys.stderr)
            continue
        if closed_by_budget:
            print(f"structgen extract: {name}: warning: the token budget closed this value (finish reason "
                  f"'budget'); it is valid but may be cut short: raise --max-tokens", file=sys.stderr)
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        print(json.dumps(value, ensure_ascii=False, separators=(",", ":")), flush=True)
    return 1 if failed else 0
