"""`structgen extract`: documents + a JSON Schema -> one JSON value per document on stdout (pipes into jq).

    structgen extract --schema schemas/invoice.json schemas/examples/invoice.txt
    cat mail.txt | structgen extract --schema schemas/support_ticket.json -
    structgen extract --local --schema schemas/receipt.json scans/*.txt     # no server: an in-process engine

Each input that works prints one line: its extracted value as compact JSON, in input order. An input that
fails prints nothing on stdout and one line on stderr naming it; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

from . import settings


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("inputs", nargs="*", metavar="FILE",
                   help="documents to extract from; '-' (or none) reads one document from stdin")
    p.add_argument("--schema", required=True, help="JSON Schema file (e.g. schemas/invoice.json)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of a structgen server")
    where.add_argument("--local", action="store_true", help="run an in-process engine instead of a server")
    p.add_argument("--instructions", default=None, help="extra instructions for the model")
    p.add_argument("--max-tokens", type=int, default=None, help="most tokens per output (default: 1024)")
    p.add_argument("--concurrency", type=int, default=8, help="documents in flight at once (default: 8)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per document (server mode)")
    p.add_argument("--api-key-file", default=None,
                   help="file holding the server's API key (also: STRUCTGEN_API_KEY)")
    p.add_argument("--model", default="default", help="--local: 'default' or a model folder / GGUF file")
    p.add_argument("--device", default="auto", help="--local: auto | cpu | cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


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


def _extract_remote(args, task, texts: list[str]) -> list:
    from .client import Client

    with Client(args.server, api_key=_api_key(args.api_key_file), timeout=args.timeout) as client:
        return [(r.value, r.error) for r in client.extract_many(
            texts, task.model or task.schema, concurrency=args.concurrency, progress=not args.no_progress,
            instructions=task.instructions, max_tokens=args.max_tokens, timeout=args.timeout)]


async def _extract_local_async(args, task, texts: list[str]) -> list:
    from .engine.config import EngineConfig
    from .engine.engine import AsyncEngine
    from .engine.requests import ConstraintSpec, GenerateRequest, SamplingParams
    from .extraction import DEFAULT_EXTRACT_MAX_TOKENS

    engine = AsyncEngine.from_config(EngineConfig(model=args.model, device=args.device))
    await engine.start()
    try:
        compiled = await engine.compile(ConstraintSpec(kind="json_schema", value=task.schema))
        gate = asyncio.Semaphore(args.concurrency)

        async def one(text: str):
            async with gate:
                try:
                    prompt = engine.tokenizer.apply_chat_template(task.messages(text), add_generation_prompt=True)
                    ids = engine.tokenizer.encode(prompt)
                    room = engine.max_model_len - len(ids)
                    if room < 1:
                        raise ValueError(f"the document is too long: {len(ids)} prompt tokens, the model's "
                                         f"context holds {engine.max_model_len}")
                    budget = min(args.max_tokens or DEFAULT_EXTRACT_MAX_TOKENS, room)
                    req = GenerateRequest(request_id=uuid.uuid4().hex, prompt_token_ids=ids,
                                          sampling=SamplingParams(max_tokens=budget), constraint=compiled)
                    parts, reason = [], None
                    async for out in engine.generate(req):
                        parts.append(out.text)
                        if out.finished:
                            reason = out.finish_reason
                            if reason == "error":
                                raise RuntimeError(f"generation failed: {out.error}")
                    return task.parse("".join(parts), reason), None
                except Exception as e:
                    return None, e

        return await asyncio.gather(*(one(t) for t in texts))
    finally:
        await engine.shutdown()


def run(args) -> int:
    from .errors import StructgenError
    from .extraction import ExtractionTask

    if args.concurrency < 1:
        print("structgen extract: --concurrency must be >= 1", file=sys.stderr)
        return 2
    if args.max_tokens is not None and args.max_tokens < 1:
        print("structgen extract: --max-tokens must be >= 1", file=sys.stderr)
        return 2
    try:
        schema = json.loads(Path(args.schema).read_text(encoding="utf-8"))
        task = ExtractionTask.of(schema, args.instructions)
    except (OSError, json.JSONDecodeError, TypeError) as e:
        print(f"structgen extract: cannot use schema {args.schema}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # jsonschema.SchemaError: not a valid JSON Schema
        print(f"structgen extract: {args.schema} is not a valid JSON Schema: {getattr(e, 'message', e)}",
              file=sys.stderr)
        return 2
    inputs = _read_inputs(args.inputs)
    readable = [(i, text) for i, (_, text, err) in enumerate(inputs) if err is None]
    try:
        if args.local:
            results = asyncio.run(_extract_local_async(args, task, [t for _, t in readable]))
        else:
            results = _extract_remote(args, task, [t for _, t in readable])
    except (StructgenError, ValueError, OSError) as e:
        print(f"structgen extract: {e}", file=sys.stderr)
        return 1
    by_index = {i: r for (i, _), r in zip(readable, results)}
    failed = 0
    for i, (name, _, read_error) in enumerate(inputs):
        value, error = by_index.get(i, (None, read_error))
        if error is not None:
            failed += 1
            print(f"structgen extract: {name}: {error}", file=sys.stderr)
            continue
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        print(json.dumps(value, ensure_ascii=False, separators=(",", ":")), flush=True)
    return 1 if failed else 0
