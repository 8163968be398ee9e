"""`structgen regress run | compare`: record a golden set's outputs with the model/engine fingerprint, then say
what changed between two runs, with paired statistics, and exit 1 when the candidate regressed (CI-ready).

Exit codes (both): 0 fine, 1 regressed (compare) / the server failed mid-run (run), 2 bad input (missing
folder, malformed golden line, mismatched golden sets, bad flags), 130 interrupted (run; rerun to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path

from ..engine.config import EngineConfig
from ..server.cli import add_config_arguments, config_kwargs

# EngineConfig.seed is the engine's fallback for requests without a seed; every regress request carries --seed,
# so the engine's flag would be a second, ineffective --seed.
_ENGINE_SKIP = ("seed",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="regress_command", metavar="{run,compare}")
    run = sub.add_parser("run", help="run a golden set through a server and record every output + fingerprint",
                         description="Run a golden set through a real server (in-process, or --server) and record "
                                     "every output, its validity, exact match, per-field correctness, latency, "
                                     "token counts and the model/engine fingerprint into --out. Resumes an "
                                     "interrupted run in the same --out.")
    run.set_defaults(_regress=_run)
    run.add_argument("--golden", required=True, type=Path,
                     help="a JSONL golden set, or a folder of extraction-dev-style *.json items")
    run.add_argument("--out", required=True, type=Path, help="the run folder (run.json + results.jsonl)")
    run.add_argument("--server", default=None,
                     help="HOST:PORT of a running server (gRPC), or http://HOST:PORT (its OpenAI-compatible HTTP "
                          "API); default: start one in this process with the engine options below")
    run.add_argument("--api", choices=("grpc", "http"), default="grpc",
                     help="the in-process server's API to send through (default grpc; --server's form decides "
                          "for a remote one)")
    run.add_argument("--api-key", default=None, help="API key of --server")
    run.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    run.add_argument("--seed", type=int, default=0, help="sampling seed sent with every request (default 0)")
    run.add_argument("--max-tokens", type=int, default=512, help="per case (default 512)")
    run.add_argument("--concurrency", type=int, default=1,
                     help="cases in flight (default 1: latency is then service time, not queueing; compare runs "
                          "of equal concurrency)")
    run.add_argument("--timeout", type=float, default=300.0, help="deadline per case, seconds (default 300)")
    run.add_argument("--fresh", action="store_true", help="discard what --out holds and start over")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(run.add_argument_group("engine options of the in-process server (EngineConfig)"),
                         EngineConfig, skip=_ENGINE_SKIP)

    cmp = sub.add_parser("compare", help="what changed from a baseline run to a candidate run; exit 1 on regression",
                         description="Compare two run folders of the same golden set: validity, exact match, "
                                     "agreement and per-field accuracy with paired statistics, latency ratios, "
                                     "flipped cases, fingerprint differences. Prints the Markdown report and "
                                     "writes report.md + report.html. Exit 0: no regression, 1: regressed, "
                                     "2: bad input.")
    cmp.set_defaults(_regress=_compare)
    cmp.add_argument("baseline", type=Path, help="the baseline run folder")
    cmp.add_argument("candidate", type=Path, help="the candidate run folder")
    cmp.add_argument("--out", type=Path, default=None,
                     help="where report.md and report.html go (default: the candidate folder)")
    cmp.add_argument("--max-accuracy-drop", type=float, default=0.02,
                     help="an accuracy drop (absolute, 0..1) above this that is also significant is a regression "
                          "(default 0.02)")
    cmp.add_argument("--max-latency-ratio", type=float, default=1.5,
                     help="a candidate/baseline latency p50 ratio above this is a regression (default 1.5; 0 = "
                          "latency not gated)")
    cmp.add_argument("--confidence", type=float, default=0.95,
                     help="confidence of the paired bootstrap intervals (default 0.95)")
    cmp.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    cmp.add_argument("--quiet", action="store_true", help="print only the verdict, not the whole report")


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "_regress", None)
    if handler is None:
        print("structgen regress: give a command: run or compare (structgen regress --help)", file=sys.stderr)
        return 2
    return handler(args)


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"structgen regress {command}: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------------------------ run
def _start_local_server(engine_kwargs: dict, *, http: bool, concurrency: int, max_tokens: int):
    """A real server on a free loopback port in this process (gRPC, + HTTP when asked), with a key made for this
    run; returns (BackgroundServer, key)."""
    from ..engine.async_engine import AsyncEngine
    from ..server.background import BackgroundServer
    from ..server.config import ServerConfig

    key = secrets.token_urlsafe(24)
    config = ServerConfig(host="127.0.0.1", port=0, http_port=0 if http else None, api_keys=frozenset({key}),
                          max_queue=max(ServerConfig.max_queue, concurrency),
                          max_tokens_limit=max(ServerConfig.max_tokens_limit, max_tokens))
    engine = AsyncEngine.from_config(EngineConfig(**engine_kwargs))
    return BackgroundServer(engine, config).start(), key


def _run(args: argparse.Namespace) -> int:
    """`structgen regress run`."""
    from . import runner
    from .fingerprint import build_fingerprint
    from .golden import GoldenError, load_golden
    from .send import Sampling, ServerUnreachable, sender_for

    if args.max_tokens < 1 or args.concurrency < 1 or args.timeout <= 0 or args.temperature < 0:
        return _fail("run", "--max-tokens and --concurrency must be >= 1, --timeout > 0, --temperature >= 0")
    try:
        engine_kwargs = config_kwargs(EngineConfig, args, skip=_ENGINE_SKIP)
        if args.server is not None and engine_kwargs:
            return _fail("run", f"engine options ({', '.join('--' + k.replace('_', '-') for k in engine_kwargs)}) "
                                "set up the in-process server; a --server runs its own (its fingerprint is "
                                "recorded from what it reports)")
        if args.server is None:
            EngineConfig(**engine_kwargs)   # every option checked before the (slow) model load
    except (ValueError, TypeError) as e:
        return _fail("run", str(e))
    try:
        golden = load_golden(args.golden)
        if not args.fresh:   # before the model loads: a folder of another set cannot be resumed
            runner.check_golden_matches(args.out, golden)
    except (GoldenError, runner.RunDirError) as e:
        return _fail("run", str(e))

    sampling = Sampling(args.temperature, args.seed, args.max_tokens, args.timeout)
    options = {"golden": str(args.golden)}
    server = None
    progress = not args.no_progress
    t0 = time.perf_counter()
    try:
        if args.server is None:
            print("regress: starting an in-process server "
                  f"({', '.join(f'{k}={v}' for k, v in engine_kwargs.items()) or 'default engine options'})",
                  file=sys.stderr)
            try:
                server, key = _start_local_server(engine_kwargs, http=args.api == "http",
                                                  concurrency=args.concurrency, max_tokens=args.max_tokens)
            except (ValueError, FileNotFoundError) as e:
                return _fail("run", f"the in-process server did not start: {e}")
            target, api_key = (server.http_url if args.api == "http" else server.target), key
        else:
            target, api_key = args.server, args.api_key

        async def main() -> tuple[int, int, int]:
            sender = sender_for(target, api_key, sampling)   # NOTE: in the loop: grpc.aio binds to it
            try:
                info = await sender.server_info()
                fingerprint = build_fingerprint(info, api=sender.api, concurrency=args.concurrency,
                                                local=server is not None,
                                                sampling={**sampling.request_kwargs(), "timeout_s": args.timeout})
                done = runner.prepare(args.out, golden, fingerprint, options, fresh=args.fresh)
                todo = [c for c in golden.cases if c.case_id not in done]
                if done:
                    print(f"regress: resuming {args.out}: {len(done)} of {len(golden.cases)} cases done, "
                          f"{len(todo)} to run", file=sys.stderr)
                if todo:
                    await runner.warm_up(sender, todo)
                n = await runner.run_cases(sender, todo, args.out, concurrency=args.concurrency,
                                           progress=progress, done_before=len(done), total=len(golden.cases))
                return len(done), n, len(todo)
            finally:
                await sender.close()

        try:
            before, recorded, todo = asyncio.run(main())
        except runner.RunDirError as e:
            return _fail("run", str(e))
        except ServerUnreachable as e:
            if (args.out / runner.RUN_FILE).is_file():
                runner.finish(args.out, golden, time.perf_counter() - t0)
            return _fail("run", f"the server went away ({e}); what finished is in {args.out}: rerun the same "
                                "command to resume", 1)
        except KeyboardInterrupt:
            if (args.out / runner.RUN_FILE).is_file():
                runner.finish(args.out, golden, time.perf_counter() - t0)
            done, _ = runner.read_results(args.out)
            return _fail("run", f"interrupted: {len(done)} of {len(golden.cases)} cases recorded in {args.out}; "
                                "rerun the same command to resume", 130)
    finally:
        if server is not None:
            server.stop()
    meta = runner.finish(args.out, golden, time.perf_counter() - t0)
    print(_run_summary(args.out, golden, meta, before, recorded))
    return 0


def _run_summary(folder: Path, golden, meta: dict, before: int, recorded: int) -> str:
    from ..bench import stats
    from . import runner

    results, _ = runner.read_results(folder)
    rs = list(results.values())
    n = len(rs)
    valid = sum(r.valid for r in rs)
    with_expected = [r for r in rs if r.exact is not None]
    exact = sum(bool(r.exact) for r in with_expected)
    errors = sum(r.status != "OK" for r in rs)
    lat = stats.summarize([r.latency_s for r in rs if r.status == "OK"], (50, 95))
    fp = meta["fingerprint"]
    return (f"regress run: {folder}: {n} of {len(golden.cases)} cases ({recorded} run now, {before} before); "
            f"valid {valid}/{n}, exact {exact}/{len(with_expected)}, errors {errors}, latency p50 "
            f"{stats.fmt(lat['p50'])} s p95 {stats.fmt(lat['p95'])} s; model {fp['model']} "
            f"weights {str(fp['weights_hash'])[:12]} dtype {fp['dtype']} quantization {fp['quantization']}")


# ------------------------------------------------------------------------------------------ compare
def _compare(args: argparse.Namespace) -> int:
    from . import compare, report_html, report_md
    from .runner import RunDirError

    if not 0 <= args.max_accuracy_drop <= 1 or args.max_latency_ratio < 0 or not 0 < args.confidence < 1 \
            or args.resamples < 100:
        return _fail("compare", "--max-accuracy-drop must be in [0, 1], --max-latency-ratio >= 0, --confidence in "
                                "(0, 1), --resamples >= 100")
    try:
        result = compare.compare_dirs(args.baseline, args.candidate, max_accuracy_drop=args.max_accuracy_drop,
                                      max_latency_ratio=args.max_latency_ratio, confidence=args.confidence,
                                      resamples=args.resamples, seed=args.seed)
    except RunDirError as e:
        return _fail("compare", str(e))
    out = args.out or args.candidate
    out.mkdir(parents=True, exist_ok=True)
    md = report_md.render(result)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(report_html.render(result))
    if not args.quiet:
        print(md)
    print(f"regress compare: {result.verdict_line()}; wrote {out / 'report.md'}, {out / 'report.html'}",
          file=sys.stderr)
    return 1 if result.regressed else 0
