"""`structgen bench serve`: throughput and latency of a running server, at several concurrency levels.

Workload: extraction items ({schema, text}); every request is the SDK's extraction prompt (one shared
instruction with the schema, the document as the user turn) under the item's JSON Schema, streamed so time to
first token is seen. Per concurrency level: requests/s, output tokens/s, TTFT, TPOT and end-to-end latency
p50/p95/p99, validity (jsonschema) and errors by status. `--baseline hf` runs the same prompts through
transformers `generate` in this process (one at a time) for a side-by-side line. `--target local` starts an
in-process server on a free port first, so one command measures the whole stack.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import stats
from .cases import ExtractionItem, default_data_dir, load_extraction
from .report import header_markdown, markdown_table, run_header, write_jsonl
from .scoring import check_json

LATENCY_QUANTILES = (50, 95, 99)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_common, int_list

    p.add_argument("--target", default="localhost:50051",
                   help='server address host:port, or "local" to start one in this process (default localhost:50051)')
    p.add_argument("--api-key", default=None)
    p.add_argument("--apis", default="grpc", help="comma-separated: grpc (the SDK) and/or openai (the openai SDK "
                   "against /v1/chat/completions, same prompts, streamed), measured one after the other on the same "
                   "server (default grpc)")
    p.add_argument("--http-url", default=None, help="the server's HTTP base URL for --apis openai (default: "
                   "http://<target host>:8000; with --target local the in-process server's)")
    p.add_argument("--workload", type=Path, default=None,
                   help="extraction folder or JSONL of {schema, text} (default: ../shared/data/extraction/dev)")
    p.add_argument("--concurrency", type=int_list, default=[1, 8, 32], help="comma-separated levels (default 1,8,32)")
    p.add_argument("--requests", type=int, default=None, help="requests per level (default: the workload size)")
    p.add_argument("--duration", type=float, default=None, help="seconds per level instead of a request count")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--timeout", type=float, default=300.0, help="deadline per request, seconds")
    p.add_argument("--baseline", choices=["none", "hf"], default="none",
                   help="hf: the same prompts through transformers generate in-process, for comparison")
    p.add_argument("--baseline-requests", type=int, default=None,
                   help="requests for the hf baseline (default: --requests; it runs one at a time, ~14 tok/s)")
    add_common(p, "serve")


@dataclass
class RequestResult:
    ok: bool
    status: str                 # "OK" or the error's class / gRPC status
    e2e_s: float
    ttft_s: float | None = None
    output_tokens: int = 0
    valid: bool | None = None   # None when there was no output to check
    finish_reason: str | None = None    # "stop" | "length" (cut by max_tokens: not complete JSON)


def _status_of(e: BaseException) -> str:
    code = getattr(e, "code", None)
    name = getattr(code, "name", None)
    return name or type(e).__name__


async def one_request(client, item: ExtractionItem, max_tokens: int, timeout: float) -> RequestResult:
    """Stream one extraction request; never raises (errors become a result with their status)."""
    from structgen.client.extraction import ExtractionTask

    task = ExtractionTask.of(item.schema)
    t0 = time.perf_counter()
    ttft = None
    text, usage, finish = [], None, None
    try:
        async for delta in client.stream(messages=task.messages(item.text), json_schema=item.schema,
                                         max_tokens=max_tokens, timeout=timeout):
            if ttft is None and delta.text:
                ttft = time.perf_counter() - t0
            text.append(delta.text)
            if delta.usage is not None:
                usage = delta.usage
            if delta.finish_reason is not None:
                finish = delta.finish_reason
    except Exception as e:  # a typed SDK error, or a broken connection: counted by status
        return RequestResult(False, _status_of(e), time.perf_counter() - t0, ttft)
    e2e = time.perf_counter() - t0
    out = usage.completion_tokens if usage else 0
    return RequestResult(True, "OK", e2e, ttft, out, check_json(item.schema, "".join(text)), finish)


async def one_request_openai(client, item: ExtractionItem, max_tokens: int, timeout: float) -> RequestResult:
    """The same request through the OpenAI-compatible API (`openai.AsyncOpenAI`, streamed, greedy)."""
    from structgen.client.extraction import ExtractionTask

    task = ExtractionTask.of(item.schema)
    t0 = time.perf_counter()
    ttft = None
    text, out_tokens, finish = [], 0, None
    try:
        stream = await client.chat.completions.create(
            model="structgen", messages=task.messages(item.text), max_tokens=max_tokens, temperature=0,
            stream=True, stream_options={"include_usage": True}, timeout=timeout,
            response_format={"type": "json_schema", "json_schema": {"name": "extraction", "schema": item.schema}})
        async for chunk in stream:
            for c in chunk.choices:
                if c.delta.content:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    text.append(c.delta.content)
                if c.finish_reason is not None:
                    finish = c.finish_reason
            if chunk.usage is not None:
                out_tokens = chunk.usage.completion_tokens
    except Exception as e:  # an openai.APIError, or a broken connection: counted by its class
        return RequestResult(False, getattr(e, "code", None) or type(e).__name__, time.perf_counter() - t0, ttft)
    return RequestResult(True, "OK", time.perf_counter() - t0, ttft, out_tokens,
                         check_json(item.schema, "".join(text)), finish)


async def run_level(client, items: list[ExtractionItem], concurrency: int, *, requests: int | None,
                    duration: float | None, max_tokens: int, timeout: float, progress: bool = True,
                    send=one_request):
    """Up to `concurrency` requests in flight, cycling through `items`; returns (results, wall seconds)."""
    source = itertools.cycle(items)
    total = requests if duration is None else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"serve c={concurrency}", unit="req", leave=False)
    results: list[RequestResult] = []
    issued = 0
    t0 = time.perf_counter()

    def more() -> bool:
        if duration is not None:
            return time.perf_counter() - t0 < duration
        return issued < total

    async def worker():
        nonlocal issued
        while more():
            issued += 1
            results.append(await send(client, next(source), max_tokens, timeout))
            if bar:
                bar.update(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    if bar:
        bar.close()
    return results, wall


def summarize_level(results: list[RequestResult], wall_s: float) -> dict:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    tpot = [(r.e2e_s - r.ttft_s) / (r.output_tokens - 1) for r in ok if r.ttft_s is not None and r.output_tokens > 1]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[r.status] = errors.get(r.status, 0) + 1
    checked = [r for r in ok if r.valid is not None]
    return {"requests": len(results), "ok": len(ok), "wall_s": wall_s,
            "req_per_s": len(ok) / wall_s if wall_s > 0 else float("nan"),
            "out_tok_per_s": out_tokens / wall_s if wall_s > 0 else float("nan"),
            "output_tokens": out_tokens,
            "ttft": stats.summarize([r.ttft_s for r in ok if r.ttft_s is not None], LATENCY_QUANTILES),
            "tpot": stats.summarize(tpot, LATENCY_QUANTILES),
            "e2e": stats.summarize([r.e2e_s for r in ok], LATENCY_QUANTILES),
            "valid": sum(1 for r in checked if r.valid), "checked": len(checked), "errors": errors,
            # Outputs cut by max_tokens, and finished ("stop") outputs that are not valid: the latter is the
            # number that must stay 0 for a constrained server.
            "length": sum(1 for r in ok if r.finish_reason == "length"),
            "invalid_finished": sum(1 for r in checked if not r.valid and r.finish_reason != "length")}


def run_hf_baseline(items: list[ExtractionItem], n: int, max_tokens: int, progress: bool = True) -> dict:
    """The same extraction prompts through transformers generate (unconstrained, greedy, one at a time)."""
    from structgen import default_tokenizer
    from structgen.client.extraction import ExtractionTask

    from .generators import HFGenerator

    tokenizer = default_tokenizer()
    gen = HFGenerator(tokenizer)
    results = []
    chosen = list(itertools.islice(itertools.cycle(items), n))
    it = chosen
    if progress:
        from tqdm import tqdm

        it = tqdm(chosen, desc="serve baseline hf", unit="req", leave=False)
    t0 = time.perf_counter()
    for item in it:
        prompt = tokenizer.encode(tokenizer.apply_chat_template(ExtractionTask.of(item.schema).messages(item.text)))
        g = gen.generate(prompt, None, max_tokens)
        results.append(RequestResult(g.finish_reason != "error", "OK" if g.finish_reason != "error" else "error",
                                     g.gen_s, None, g.output_tokens, check_json(item.schema, g.text),
                                     g.finish_reason))
    return summarize_level(results, time.perf_counter() - t0)


def render_markdown(levels: list[tuple[str, int, dict]], header: dict, note: str) -> str:
    ms = 1e3
    headers = ["engine", "concurrency", "requests", "ok", "req/s", "out tok/s", "TTFT p50 ms", "TTFT p95 ms",
               "TTFT p99 ms", "TPOT p50 ms", "TPOT p95 ms", "TPOT p99 ms", "e2e p50 s", "e2e p95 s", "e2e p99 s",
               "valid", "cut by max_tokens", "finished but invalid", "errors"]
    rows = []
    for name, c, s in levels:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(s["errors"].items())) or "0"
        rows.append([name, c, s["requests"], s["ok"], stats.fmt(s["req_per_s"]), stats.fmt(s["out_tok_per_s"]),
                     stats.fmt(s["ttft"]["p50"], ms), stats.fmt(s["ttft"]["p95"], ms), stats.fmt(s["ttft"]["p99"], ms),
                     stats.fmt(s["tpot"]["p50"], ms), stats.fmt(s["tpot"]["p95"], ms), stats.fmt(s["tpot"]["p99"], ms),
                     stats.fmt(s["e2e"]["p50"]), stats.fmt(s["e2e"]["p95"]), stats.fmt(s["e2e"]["p99"]),
                     f"{s['valid']}/{s['checked']} ({stats.fmt_pct(s['valid'], s['checked'])})",
                     s.get("length", "-"), s.get("invalid_finished", "-"), errors])
    return "\n".join(["## Serving benchmark", header_markdown(header), "", note, "",
                      markdown_table(headers, rows)]) + "\n"


def _start_local_server():
    from structgen.engine.config import EngineConfig
    from structgen.engine.async_engine import AsyncEngine
    from structgen.server.background import BackgroundServer
    from structgen.server.config import ServerConfig

    server = BackgroundServer(AsyncEngine.from_config(EngineConfig()), ServerConfig(port=0, http_port=0)).start()
    return server


def run(args: argparse.Namespace) -> int:
    from structgen import AsyncClient

    if args.requests is not None and args.requests < 1 or args.duration is not None and args.duration <= 0 or \
            args.baseline_requests is not None and args.baseline_requests < 1:
        print("structgen bench serve: --requests and --baseline-requests must be >= 1 and --duration > 0",
              file=sys.stderr)
        return 2
    try:
        items = load_extraction(args.workload or (default_data_dir() / "extraction" / "dev"))
    except (FileNotFoundError, ValueError) as e:
        print(f"structgen bench serve: {e}", file=sys.stderr)
        return 2
    apis = [a.strip() for a in args.apis.split(",") if a.strip()]
    if not apis or set(apis) - {"grpc", "openai"}:
        print(f"structgen bench serve: --apis takes grpc and/or openai, got {args.apis!r}", file=sys.stderr)
        return 2
    n_requests = args.requests or len(items)
    header = run_header()
    server = None
    target = args.target
    if target == "local":
        print("serve: starting an in-process server (default model)", file=sys.stderr)
        server = _start_local_server()
        target = server.target
    http_url = args.http_url or (server.http_url if server is not None else f"http://{target.rsplit(':', 1)[0]}:8000")
    levels: list[tuple[str, int, dict]] = []
    records: list[dict] = [{"type": "header", **header, "target": args.target}]

    warmed = []

    async def measure(name: str, client, send):
        # One pass over every item first, not counted: each schema's compile (and the model's first forward) is
        # paid before any level, so the first API measured does not carry the compiles the others reuse.
        if not warmed:
            await run_level(client, items, min(8, len(items)), requests=len(items), duration=None,
                            max_tokens=args.max_tokens, timeout=args.timeout, progress=False, send=send)
            warmed.append(True)
        for c in args.concurrency:
            results, wall = await run_level(client, items, c, requests=n_requests, duration=args.duration,
                                            max_tokens=args.max_tokens, timeout=args.timeout,
                                            progress=not args.no_progress, send=send)
            s = summarize_level(results, wall)
            levels.append((name, c, s))
            records.append({"type": "level", "engine": name, "concurrency": c, **s})

    async def main():
        for api in apis:  # one after the other: they share the server's CPU
            if api == "grpc":
                async with AsyncClient(target, api_key=args.api_key) as client:
                    if not await client.health(timeout=10):
                        raise ConnectionError(f"no healthy structgen server at {target}")
                    await measure("structgen (gRPC SDK)", client, one_request)
            else:
                import openai

                async with openai.AsyncOpenAI(base_url=http_url + "/v1", api_key=args.api_key or "none",
                                              max_retries=0) as client:
                    await measure("structgen (HTTP, openai SDK)", client, one_request_openai)

    try:
        asyncio.run(main())
    except Exception as e:
        print(f"structgen bench serve: {type(e).__name__}: {e}", file=sys.stderr)
        if not levels:
            return 1
    finally:
        if server is not None:
            server.stop()
    if args.baseline == "hf":
        n = args.baseline_requests or (n_requests if args.duration is None else len(items))  # a duration: one pass
        s = run_hf_baseline(items, n, args.max_tokens, progress=not args.no_progress)
        levels.append(("hf generate (in-process, unconstrained)", 1, s))
        records.append({"type": "level", "engine": "hf", "concurrency": 1, **s})
    out = Path(args.out)
    write_jsonl(out / "results.jsonl", records)
    note = (f"Workload: {len(items)} extraction items (SDK extraction prompt, JSON Schema constraint), "
            f"max_tokens {args.max_tokens}, {n_requests if args.duration is None else f'{args.duration:g} s'} per level, "
            "after one uncounted pass over every item (compiles paid before any level). "
            "TTFT: first streamed text; TPOT: (e2e - TTFT) / (output tokens - 1); valid: jsonschema, formats checked."
            + (f" The hf line: {levels[-1][2]['requests']} of the same prompts through transformers generate, one at "
               "a time, unconstrained, greedy, same max_tokens." if args.baseline == "hf" else ""))
    md = render_markdown(levels, header, note)
    (out / "summary.md").write_text(md)
    print(md)
    print(f"wrote {out / 'results.jsonl'}, {out / 'summary.md'}", file=sys.stderr)
    return 0
