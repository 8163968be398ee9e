"""`structgen bench extraction`: does `extract` return a valid value, how did each request end, and is it right?

Every item goes through a real server as the SDK's `extract` sends it (its prompt, its schema constraint, its
defaults, plus any `--param` keyword the SDK accepts), greedy unless a parameter says otherwise, `--concurrency`
requests in flight. Per dataset: the share of responses that hold a valid value (the output parses as JSON and
validates with jsonschema, formats checked), how requests finished (stop / budget / length / error), exact matches
(value == expected), per-field accuracy against the item's `acceptable` answers, output tokens, tok/s and latency.

Datasets (same item format: schema, text, expected, acceptable): `extraction` is the short extraction dev set
(`<data>/extraction/dev`), `documents` the generated document corpus (`benchmarks/documents/items`); any other
name is read as a folder or JSON Lines path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from ..client.extraction import EXTRACT_SAMPLING_DEFAULTS
from . import stats
from .cases import ExtractionItem, default_data_dir, load_extraction
from .report import header_markdown, markdown_table, run_header, write_jsonl
from .scoring import FINISH_REASONS, ItemResult, failed, score, summarize
from .serve import _start_local_server, _status_of

DEFAULT_DATASETS = ("extraction", "documents")


def dataset_path(name: str) -> Path:
    """The folder of a named dataset; any other name is taken as a path (folder or JSON Lines)."""
    if name == "extraction":
        return default_data_dir() / "extraction" / "dev"
    if name == "documents":
        return Path(__file__).resolve().parents[2] / "benchmarks" / "documents" / "items"  # a checkout
    return Path(name)


def param_value(text: str):
    """`--param name=value`'s value: JSON when it parses (1.1, 3, true, {"5": -2}), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(pairs: list[str]) -> dict:
    """["repetition_penalty=1.1", ...] -> {"repetition_penalty": 1.1}; ValueError for a malformed or repeated one."""
    out: dict = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ValueError(f"--param takes name=value (a keyword of the SDK's extract), got {pair!r}")
        if name in out:
            raise ValueError(f"--param {name} given twice")
        out[name] = param_value(value.strip())
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_common, csv_list

    p.add_argument("--target", default="local",
                   help='server address host:port, or "local" (default) to start one in this process')
    p.add_argument("--api-key", default=None)
    p.add_argument("--datasets", type=csv_list, default=list(DEFAULT_DATASETS),
                   help="comma-separated: extraction, documents, or paths of item folders / JSONL "
                        "(default extraction,documents)")
    p.add_argument("--limit", type=int, default=0, help="first N items of each dataset (default 0: all)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--max-tokens", type=int, default=1024, help="per request (default 1024, the SDK's extract default)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword argument forwarded to the SDK's extract, e.g. repetition_penalty=1.1 "
                        "(repeatable; values are JSON where they parse)")
    p.add_argument("--timeout", type=float, default=600.0, help="deadline per request, seconds")
    add_common(p, "extraction")


# ------------------------------------------------------------------------------------------ requests
async def one_request(client, item: ExtractionItem, *, max_tokens: int, params: dict, timeout: float) -> ItemResult:
    """Send `item` exactly as `extract` would; never raises (a failure becomes an "error" result)."""
    from structgen.client import wire
    from structgen.client.extraction import ExtractionTask

    t0 = time.perf_counter()
    try:
        task = ExtractionTask.of(item.schema)
        call = wire.extract_call(task, item.text, max_tokens=max_tokens, **params)
        # NOTE: the request extract builds, byte for byte (prompt, constraint, its defaults), but kept as the raw
        # response: extract's own result has no finish reason, token count or text when it fails.
        response = await client._unary(wire.Call(call.rpc, call.request, lambda r: r), client._deadline(timeout))
    except Exception as e:  # a typed SDK error or a broken connection: counted by status
        return failed(item, _status_of(e), time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    latency = time.perf_counter() - t0
    done = wire.completion(response)
    try:
        call.parse(response)
        extract_ok, detail = True, ""
    except Exception as e:  # ExtractionError: what the user of extract would have got instead of a value
        extract_ok, detail = False, f"{type(e).__name__}: {e}"
    return score(item, done.text, done.finish_reason or "unspecified", output_tokens=done.usage.completion_tokens,
                 latency_s=latency, extract_ok=extract_ok, detail=detail)


async def run_dataset(client, items: list[ExtractionItem], *, concurrency: int, max_tokens: int, params: dict,
                      timeout: float, progress: bool = True, desc: str = "extraction"):
    """Every item once, at most `concurrency` in flight; returns (results in item order, wall seconds)."""
    gate = asyncio.Semaphore(concurrency)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="req", leave=False)

    async def one(item):
        async with gate:
            r = await one_request(client, item, max_tokens=max_tokens, params=params, timeout=timeout)
        if bar:
            bar.update(1)
        return r

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(item) for item in items))
    wall = time.perf_counter() - t0
    if bar:
        bar.close()
    return list(results), wall


# ------------------------------------------------------------------------------------------ tables
def render_markdown(datasets: list[tuple[str, dict]], header: dict, note: str) -> str:
    extra = sorted({k for _, s in datasets for k in s["finish"]} - set(FINISH_REASONS))
    reasons = list(FINISH_REASONS) + extra
    headers = ["dataset", "requests", "valid value", "extract returned a value", *reasons, "exact match",
               "field accuracy", "output tokens", "out tok/s", "latency p50 s", "latency p95 s", "wall s"]
    rows = []
    for name, s in datasets:
        n = s["requests"]
        rows.append([name, n, f"{s['valid']} ({stats.fmt_pct(s['valid'], n)})",
                     f"{s['extract_ok']} ({stats.fmt_pct(s['extract_ok'], n)})",
                     *(s["finish"].get(r, 0) for r in reasons),
                     f"{s['exact']} ({stats.fmt_pct(s['exact'], n)})",
                     f"{s['fields_right']}/{s['fields']} ({stats.fmt_pct(s['fields_right'], s['fields'])})",
                     s["output_tokens"], stats.fmt(s["out_tok_per_s"]), stats.fmt(s["latency"]["p50"]),
                     stats.fmt(s["latency"]["p95"]), stats.fmt(s["wall_s"])])
    parts = ["## Extraction quality", header_markdown(header), "", note, "", markdown_table(headers, rows)]
    for name, s in datasets:
        if s["errors"]:
            parts += ["", f"Errors ({name}): " + ", ".join(f"{k}: {v}" for k, v in sorted(s["errors"].items()))]
    for name, s in datasets:
        field_rows = [[key, of, right, stats.fmt_pct(right, of)] for key, (right, of) in s["per_field"].items()]
        parts += ["", f"### Per field: {name}", "", markdown_table(["field", "items", "right", "accuracy"],
                                                                   field_rows)]
    return "\n".join(parts) + "\n"


def _record(dataset: str, r: ItemResult) -> dict:
    return {"type": "item", "dataset": dataset, "id": r.item_id, "title": r.title, "finish": r.finish,
            "status": r.status, "valid": r.valid, "extract_ok": r.extract_ok, "exact": r.exact, "fields": r.fields,
            "output_tokens": r.output_tokens, "latency_s": r.latency_s, "text": r.text, "detail": r.detail}


# ------------------------------------------------------------------------------------------ the command
def run(args: argparse.Namespace) -> int:
    from structgen import AsyncClient
    from structgen.client import wire
    from structgen.client.extraction import ExtractionTask

    def fail(message: str) -> int:
        print(f"structgen bench extraction: {message}", file=sys.stderr)
        return 2

    if args.concurrency < 1 or args.max_tokens < 1 or args.limit < 0 or args.timeout <= 0:
        return fail("--concurrency and --max-tokens must be >= 1, --limit >= 0, --timeout > 0")
    if not args.datasets:
        return fail("--datasets names no dataset")
    try:
        params = parse_params(args.param)
    except ValueError as e:
        return fail(str(e))
    # an SDK that does not know a parameter must stop the run here, before any data is read, not turn every
    # request into an error; a one-field schema stands in for the items, the keywords do not depend on them
    try:
        wire.extract_call(ExtractionTask.of({"type": "object", "properties": {"x": {"type": "string"}}}), "x",
                          max_tokens=args.max_tokens, **params)
    except (TypeError, ValueError) as e:
        return fail(f"the SDK's extract refuses --param {', '.join(params) or '(none)'}: {e}")
    try:
        datasets = [(name, load_extraction(dataset_path(name))) for name in args.datasets]
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    if args.limit:
        datasets = [(name, items[: args.limit]) for name, items in datasets]
    first = datasets[0][1][0]
    header = run_header()
    records: list[dict] = [{"type": "header", **header, "target": args.target, "concurrency": args.concurrency,
                            "max_tokens": args.max_tokens, "params": params}]
    server = None
    target = args.target
    if target == "local":
        print("extraction: starting an in-process server (default model)", file=sys.stderr)
        server = _start_local_server()
        target = server.target
    summaries: list[tuple[str, dict]] = []

    async def main():
        async with AsyncClient(target, api_key=args.api_key) as client:
            if not await client.health(timeout=10):
                raise ConnectionError(f"no healthy structgen server at {target}")
            # a short first request, so model load and the first compile stay out of the first dataset's times
            await one_request(client, first, max_tokens=8, params=params, timeout=args.timeout)
            for name, items in datasets:
                results, wall = await run_dataset(client, items, concurrency=args.concurrency,
                                                  max_tokens=args.max_tokens, params=params, timeout=args.timeout,
                                                  progress=not args.no_progress, desc=f"extraction {name}")
                s = summarize(results, wall)
                summaries.append((name, s))
                records.extend(_record(name, r) for r in results)
                records.append({"type": "dataset", "dataset": name, **s})

    t0 = time.perf_counter()
    try:
        asyncio.run(main())
    except Exception as e:
        print(f"structgen bench extraction: {type(e).__name__}: {e}", file=sys.stderr)
        if not summaries:
            return 1
    finally:
        if server is not None:
            server.stop()
    total_s = time.perf_counter() - t0
    records.append({"type": "total", "wall_s": total_s})
    out = Path(args.out)
    write_jsonl(out / "results.jsonl", records)
    # extract's own defaults apply under whatever --param sets (greedy unless a temperature is given)
    sampling = ", ".join(f"{k}={v}" for k, v in {**EXTRACT_SAMPLING_DEFAULTS, **params}.items())
    note = (f"Each item once through `extract`'s request ({sampling}), max_tokens {args.max_tokens}, "
            f"{args.concurrency} in flight, target {args.target}; whole run {total_s:.0f} s. Valid value: the output "
            "parses as JSON and validates (jsonschema Draft 2020-12, formats checked); extract returned a value: the "
            "SDK's own check. Finish reasons: stop = natural end, budget = closed by the budget, length = cut by "
            "max_tokens, error = no response. Exact match: value == expected. Field accuracy: top-level keys whose "
            "value is one of the item's acceptable answers (an omitted key counts as right where \"\" is "
            "acceptable); no valid value = every field wrong. Latency: per answered request, end to end.")
    md = render_markdown(summaries, header, note)
    (out / "summary.md").write_text(md)
    print(md)
    print(f"wrote {out / 'results.jsonl'}, {out / 'summary.md'}", file=sys.stderr)
    return 0
