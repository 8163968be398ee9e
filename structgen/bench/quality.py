"""`structgen bench quality`: extraction quality of structgen beside its peers, on the same model and the same data.

Systems (each item's prompt is the chat prompt `extract` builds: the schema in the system turn, the document as the
user turn; greedy; the same max_tokens):
- `structgen`: through a real in-process server, exactly as the SDK's `extract` sends it (its schema constraint and
  its sampling defaults, i.e. the DRY guard at 0.8);
- `structgen-nodry`: the same with the DRY guard off (dry_multiplier 0): plain greedy, as transformers decodes below;
- `unconstrained`: the same server and request with no constraint: does the model even answer with valid JSON?
- `hf+llguidance`: transformers `generate` (greedy, no repetition guard) on the same weights (the safetensors folder
  the engine loads, `structgen.assets`), each step masked by llguidance's matcher compiled from the item's schema
  (bench/generators.py's logits processor over bench/peers.py's adapter: llguidance's own JSON defaults).

Per dataset and system, scored by bench/scoring.py (shared with `bench extraction` and `structgen regress`): valid
values (JSON that validates with jsonschema, formats checked), outputs that parse as JSON at all, exact matches,
per-field accuracy, finish reasons, output tok/s (output tokens / the system's wall time on the dataset) and
latency. Requests run one at a time by default (transformers runs one at a time), so tok/s compares like for like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Callable

from ..client.extraction import EXTRACT_SAMPLING_DEFAULTS
from . import stats
from .cases import ExtractionItem, load_extraction
from .extraction import DEFAULT_DATASETS, dataset_path
from .report import header_markdown, markdown_table, run_header, write_jsonl
from .scoring import FINISH_REASONS, ItemResult, failed, score, summarize

# name -> sampling sent with the request on top of extract's defaults (server systems only)
SERVER_SYSTEMS = {"structgen": {}, "structgen-nodry": {"dry_multiplier": 0.0}, "unconstrained": {}}
SYSTEMS = ("structgen", "structgen-nodry", "unconstrained", "hf+llguidance")
DEFAULT_SYSTEMS = ("structgen", "unconstrained", "hf+llguidance")
REFERENCE = "structgen"  # the system the tok/s ratio column divides by


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_common, csv_list, json_object

    p.add_argument("--systems", type=csv_list, default=list(DEFAULT_SYSTEMS),
                   help=f"comma-separated, from {', '.join(SYSTEMS)} (default {','.join(DEFAULT_SYSTEMS)})")
    p.add_argument("--datasets", type=csv_list, default=list(DEFAULT_DATASETS),
                   help="comma-separated: extraction, documents, or paths of item folders / JSONL "
                        "(default extraction,documents)")
    p.add_argument("--limit", type=int, default=0, help="first N items of each dataset (default 0: all)")
    p.add_argument("--max-tokens", type=int, default=1024,
                   help="output tokens per request, every system (default 1024, the SDK's extract default)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="requests in flight for the server systems (default 1: transformers runs one at a time)")
    p.add_argument("--timeout", type=float, default=600.0, help="deadline per server request, seconds")
    p.add_argument("--engine-config", type=json_object, default={},
                   help='JSON overrides for the local server\'s EngineConfig, e.g. {"quantization": "int8"}')
    add_common(p, "quality")


# ------------------------------------------------------------------------------------------ scoring glue
def parses_json(text: str) -> bool:
    """The output is one JSON value (whatever its shape): the least a JSON answer must be."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def summarize_system(results: list[ItemResult], wall_s: float) -> dict:
    """scoring.summarize plus how many outputs parse as JSON at all."""
    return {**summarize(results, wall_s), "parses_json": sum(parses_json(r.text) for r in results)}


def _extract_accepts(item: ExtractionItem, text: str, finish: str) -> tuple[bool, str]:
    """Whether the SDK's extract would return this output as a value, and why not."""
    from structgen.client.extraction import ExtractionTask

    try:
        ExtractionTask.of(item.schema).parse(text, finish)
    except Exception as e:  # ExtractionError
        return False, f"{type(e).__name__}: {e}"
    return True, ""


# ------------------------------------------------------------------------------------------ server systems
async def server_request(client, item: ExtractionItem, system: str, *, max_tokens: int,
                         timeout: float) -> ItemResult:
    """One item as `system` sends it to the server; never raises (a failure becomes an "error" result)."""
    from structgen.client import wire
    from structgen.client.extraction import ExtractionTask

    from .extraction import one_request
    from .serve import _status_of

    params = SERVER_SYSTEMS[system]
    if system != "unconstrained":
        return await one_request(client, item, max_tokens=max_tokens, params=params, timeout=timeout)
    t0 = time.perf_counter()
    try:
        task = ExtractionTask.of(item.schema)
        # NOTE: extract's request without its constraint: same messages, same sampling defaults, same budget
        request = wire.build_request(messages=task.messages(item.text), max_tokens=max_tokens,
                                     **{**EXTRACT_SAMPLING_DEFAULTS, **params})
        response = await client._unary(wire.Call(wire.GENERATE, request, lambda r: r), client._deadline(timeout))
    except Exception as e:
        return failed(item, _status_of(e), time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    latency = time.perf_counter() - t0
    done = wire.completion(response)
    finish = done.finish_reason or "unspecified"
    ok, detail = _extract_accepts(item, done.text, finish)
    return score(item, done.text, finish, output_tokens=done.usage.completion_tokens, latency_s=latency,
                 extract_ok=ok, detail=detail)


async def run_server_system(target: str, system: str, items: list[ExtractionItem], *, concurrency: int,
                            max_tokens: int, timeout: float, progress: bool) -> tuple[list[ItemResult], float]:
    """Every item once through `system`, at most `concurrency` in flight: (results in item order, wall seconds)."""
    from structgen import AsyncClient

    gate = asyncio.Semaphore(concurrency)
    bar = _bar(len(items), system, progress)
    async with AsyncClient(target) as client:
        if not await client.health(timeout=10):
            raise ConnectionError(f"no healthy structgen server at {target}")

        async def one(item):
            async with gate:
                r = await server_request(client, item, system, max_tokens=max_tokens, timeout=timeout)
            if bar:
                bar.update(1)
            return r

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(item) for item in items))
        wall = time.perf_counter() - t0
    if bar:
        bar.close()
    return list(results), wall


# ------------------------------------------------------------------------------------------ transformers + llguidance
class HFLLGuidance:
    """transformers `generate` on the default model's safetensors folder, masked by llguidance per item."""

    name = "hf+llguidance"

    def __init__(self):
        from structgen import default_tokenizer

        from .generators import HFGenerator

        self.tokenizer = default_tokenizer()
        self.generator = HFGenerator(self.tokenizer, "llguidance")  # raises EngineUnavailable without llguidance

    def prompt_ids(self, item: ExtractionItem) -> list[int]:
        """The ids of extract's chat prompt, as the server builds them from the same messages."""
        from structgen.client.extraction import ExtractionTask

        messages = ExtractionTask.of(item.schema).messages(item.text)
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def run_item(self, item: ExtractionItem, max_tokens: int) -> ItemResult:
        """Never raises: a schema llguidance refuses or a failed generation becomes an "error" result."""
        from .generators import ConstraintRefused

        t0 = time.perf_counter()
        try:
            compiled = self.generator.compile(item.schema)  # in the latency, as the server's compile is
        except ConstraintRefused as e:
            return failed(item, "COMPILE_REFUSED", time.perf_counter() - t0, str(e))
        g = self.generator.generate(self.prompt_ids(item), compiled, max_tokens)
        latency = time.perf_counter() - t0
        if g.finish_reason == "error":
            return failed(item, "error", latency, g.error or "generation failed")
        ok, detail = _extract_accepts(item, g.text, g.finish_reason)
        return score(item, g.text, g.finish_reason, output_tokens=g.output_tokens, latency_s=latency,
                     extract_ok=ok, detail=g.error or detail)


def run_local_system(run_item: Callable[[ExtractionItem, int], ItemResult], name: str, items: list[ExtractionItem],
                     *, max_tokens: int, progress: bool) -> tuple[list[ItemResult], float]:
    """Every item once, one at a time, through `run_item(item, max_tokens)`: (results, wall seconds)."""
    bar = _bar(len(items), name, progress)
    results = []
    t0 = time.perf_counter()
    for item in items:
        results.append(run_item(item, max_tokens))
        if bar:
            bar.update(1)
    wall = time.perf_counter() - t0
    if bar:
        bar.close()
    return results, wall


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"quality {desc}", unit="req", leave=False)


# ------------------------------------------------------------------------------------------ tables
def render_markdown(summaries: dict[tuple[str, str], dict | str], header: dict, note: str) -> str:
    """`summaries`: (dataset, system) -> summarize_system's dict, or the reason the system did not run."""
    reasons = list(FINISH_REASONS) + sorted({k for s in summaries.values() if isinstance(s, dict)
                                             for k in s["finish"]} - set(FINISH_REASONS))
    headers = ["dataset", "system", "requests", "valid value", "parses as JSON", "exact match", "field accuracy",
               *reasons, "output tokens", "out tok/s", f"tok/s vs {REFERENCE}", "latency p50 s", "latency p95 s",
               "wall s"]
    rows, notes = [], []
    for (dataset, system), s in summaries.items():
        if isinstance(s, str):
            rows.append([dataset, system, "not run"] + ["-"] * (len(headers) - 3))
            notes.append(f"- {system} ({dataset}): {s}")
            continue
        n = s["requests"]
        ref = summaries.get((dataset, REFERENCE))
        ratio = stats.fmt_ratio(stats.ratio(s["out_tok_per_s"], ref["out_tok_per_s"])) \
            if isinstance(ref, dict) else "-"
        rows.append([dataset, system, n, f"{s['valid']} ({stats.fmt_pct(s['valid'], n)})",
                     f"{s['parses_json']} ({stats.fmt_pct(s['parses_json'], n)})",
                     f"{s['exact']} ({stats.fmt_pct(s['exact'], n)})",
                     f"{s['fields_right']}/{s['fields']} ({stats.fmt_pct(s['fields_right'], s['fields'])})",
                     *(s["finish"].get(r, 0) for r in reasons), s["output_tokens"], stats.fmt(s["out_tok_per_s"]),
                     ratio, stats.fmt(s["latency"]["p50"]), stats.fmt(s["latency"]["p95"]), stats.fmt(s["wall_s"])])
        if s["errors"]:
            notes.append(f"- {system} ({dataset}) errors: " + ", ".join(f"{k}: {v}" for k, v in
                                                                        sorted(s["errors"].items())))
    parts = ["## Extraction quality beside peers", header_markdown(header), "", note, "",
             markdown_table(headers, rows)]
    if notes:
        parts += ["", *notes]
    for dataset in dict.fromkeys(d for d, _ in summaries):
        ran = [(system, s) for (d, system), s in summaries.items() if d == dataset and isinstance(s, dict)]
        keys = sorted({k for _, s in ran for k in s["per_field"]})
        if not keys:
            continue
        field_rows = [[key, ran[0][1]["per_field"][key][1] if key in ran[0][1]["per_field"] else "-",
                       *(stats.fmt_pct(*s["per_field"][key]) if key in s["per_field"] else "-" for _, s in ran)]
                      for key in keys]
        parts += ["", f"### Per field: {dataset}", "",
                  markdown_table(["field", "items", *(system for system, _ in ran)], field_rows)]
    return "\n".join(parts) + "\n"


def _record(dataset: str, system: str, r: ItemResult) -> dict:
    return {"type": "item", "dataset": dataset, "system": system, "id": r.item_id, "title": r.title,
            "finish": r.finish, "status": r.status, "valid": r.valid, "parses_json": parses_json(r.text),
            "extract_ok": r.extract_ok, "exact": r.exact, "fields": r.fields, "output_tokens": r.output_tokens,
            "latency_s": r.latency_s, "text": r.text, "detail": r.detail}


# ------------------------------------------------------------------------------------------ the command
def check_args(args: argparse.Namespace) -> str | None:
    """The reason the arguments cannot run, or None."""
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        return f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}"
    if not args.systems or not args.datasets:
        return "--systems and --datasets must each name at least one"
    if args.max_tokens < 1 or args.concurrency < 1 or args.limit < 0 or args.timeout <= 0:
        return "--max-tokens and --concurrency must be >= 1, --limit >= 0, --timeout > 0"
    try:
        from structgen.engine.config import EngineConfig

        EngineConfig(**args.engine_config)
    except (TypeError, ValueError) as e:
        return f"--engine-config: {e}"
    return None


def _start_server(engine_config: dict):
    from structgen.engine.async_engine import AsyncEngine
    from structgen.engine.config import EngineConfig
    from structgen.server.background import BackgroundServer
    from structgen.server.config import ServerConfig

    return BackgroundServer(AsyncEngine.from_config(EngineConfig(**engine_config)),
                            ServerConfig(port=0, http_port=0)).start()


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"structgen bench quality: {message}", file=sys.stderr)
        return 2

    problem = check_args(args)
    if problem:
        return fail(problem)
    try:
        datasets = [(name, load_extraction(dataset_path(name))) for name in args.datasets]
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    if args.limit:
        datasets = [(name, items[: args.limit]) for name, items in datasets]
    empty = [name for name, items in datasets if not items]
    if empty:
        return fail(f"no items in {', '.join(empty)}")
    systems = list(dict.fromkeys(args.systems))
    progress = not args.no_progress
    header = run_header()
    records: list[dict] = [{"type": "header", **header, "systems": systems, "max_tokens": args.max_tokens,
                            "concurrency": args.concurrency, "engine_config": args.engine_config}]
    summaries: dict[tuple[str, str], dict | str] = {}

    def keep(dataset: str, system: str, results: list[ItemResult], wall: float) -> None:
        s = summarize_system(results, wall)
        summaries[(dataset, system)] = s
        records.extend(_record(dataset, system, r) for r in results)
        records.append({"type": "summary", "dataset": dataset, "system": system, **s})

    t0 = time.perf_counter()
    server_systems = [s for s in systems if s in SERVER_SYSTEMS]
    if server_systems:
        print("quality: starting an in-process server", file=sys.stderr)
        server = _start_server(args.engine_config)
        try:
            first = datasets[0][1][0]
            # one short request per system first, so model load and the first compile stay out of every time
            for system in server_systems:
                asyncio.run(run_server_system(server.target, system, [first], concurrency=1, max_tokens=16,
                                              timeout=args.timeout, progress=False))
            for name, items in datasets:
                for system in server_systems:
                    keep(name, system, *asyncio.run(run_server_system(
                        server.target, system, items, concurrency=args.concurrency, max_tokens=args.max_tokens,
                        timeout=args.timeout, progress=progress)))
        except Exception as e:  # the server failed under us: report what ran
            print(f"structgen bench quality: {type(e).__name__}: {e}", file=sys.stderr)
            for name, _ in datasets:
                for system in server_systems:
                    summaries.setdefault((name, system), f"failed: {type(e).__name__}: {e}")
        finally:
            server.stop()  # before transformers loads its copy: the CPU and memory are its alone
    if "hf+llguidance" in systems:
        from .peers import EngineUnavailable

        try:
            peer = HFLLGuidance()
        except (EngineUnavailable, ImportError, OSError) as e:
            for name, _ in datasets:
                summaries[(name, "hf+llguidance")] = f"unavailable: {e}"
        else:
            peer.run_item(datasets[0][1][0], 4)  # warm-up, not counted
            for name, items in datasets:
                keep(name, "hf+llguidance", *run_local_system(peer.run_item, "hf+llguidance", items,
                                                              max_tokens=args.max_tokens, progress=progress))
    # rows in the order asked: dataset, then system
    summaries = {(d, s): summaries[(d, s)] for d, _ in datasets for s in systems if (d, s) in summaries}
    total_s = time.perf_counter() - t0
    records.append({"type": "total", "wall_s": total_s})
    out = Path(args.out)
    write_jsonl(out / "results.jsonl", records)
    sampling = ", ".join(f"{k}={v}" for k, v in EXTRACT_SAMPLING_DEFAULTS.items())
    note = (f"Greedy, max_tokens {args.max_tokens}, extract's chat prompt for every system; server systems "
            f"{args.concurrency} in flight on an in-process server (EngineConfig overrides: "
            f"{json.dumps(args.engine_config) if args.engine_config else 'none'}), transformers one at a time; "
            f"whole run {total_s:.0f} s. structgen = extract's request ({sampling}); structgen-nodry = the same "
            "with dry_multiplier 0; unconstrained = the same request without its constraint; hf+llguidance = "
            "transformers generate masked by llguidance (its JSON defaults; no repetition guard). Valid value: the "
            "output parses as JSON and validates (jsonschema Draft 2020-12, formats checked); parses as JSON: any "
            "JSON value. Exact match: value == expected. Field accuracy: top-level keys whose value is one of the "
            "item's acceptable answers; no valid value = every field wrong. Finish: stop = natural end, budget = "
            "closed by structgen's budget guard, length = cut by max_tokens, error = no output (for hf+llguidance "
            "also a schema it refused). tok/s: output tokens / the system's wall time on the dataset (compile "
            "included); latency per answered request.")
    md = render_markdown(summaries, header, note)
    (out / "summary.md").write_text(md)
    print(md)
    print(f"wrote {out / 'results.jsonl'}, {out / 'summary.md'}", file=sys.stderr)
    return 0
