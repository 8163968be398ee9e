"""`structgen serve`: run the gRPC server on one model; prints where it listens, then "ready"."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import ServerConfig, load_api_keys


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--model", default="default",
                   help="'default' (the embedded SmolLM2-135M-Instruct) or a model folder / GGUF file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=50051, help="port to bind; 0 picks a free one (default: 50051)")
    p.add_argument("--api-key-file", default=None,
                   help="file of accepted API keys, one per line (also: STRUCTGEN_API_KEYS=k1,k2)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint")
    p.add_argument("--max-queue", type=int, default=ServerConfig.max_queue,
                   help="most requests held at once; past it RESOURCE_EXHAUSTED (default: %(default)s)")
    p.add_argument("--max-tokens-limit", type=int, default=ServerConfig.max_tokens_limit,
                   help="largest max_tokens a request may ask for (default: %(default)s)")
    p.add_argument("--default-max-tokens", type=int, default=ServerConfig.default_max_tokens,
                   help="max_tokens when a request leaves it unset (default: %(default)s)")
    p.add_argument("--max-request-bytes", type=int, default=ServerConfig.max_request_bytes,
                   help="largest request message (default: %(default)s)")
    p.add_argument("--drain-timeout", type=float, default=ServerConfig.drain_timeout_s,
                   help="seconds in-flight requests may take to finish on SIGTERM (default: %(default)s)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="engine: most sequences per batch")
    p.add_argument("--kv-cache-bytes", type=int, default=None, help="engine: KV pool size in bytes")
    p.add_argument("--max-model-len", type=int, default=None, help="engine: context length cap in tokens")
    p.add_argument("--forced-runs", action=argparse.BooleanOptionalAction, default=None,
                   help="engine: append the constraint's forced continuation without sampling (default: the "
                        "engine's)")
    p.add_argument("--speculation", choices=("off", "prompt_lookup", "draft_model"), default=None,
                   help="engine: draft proposer, verified by the model (default: the engine's)")
    p.add_argument("--draft-model", default=None,
                   help="engine: model folder / GGUF file of a draft model of the same tokenizer (implies "
                        "--speculation draft_model; the --model value drafts with the target's own weights)")
    p.add_argument("--num-speculative-tokens", type=int, default=None,
                   help="engine: most proposed tokens per step (k is adapted below it)")
    p.add_argument("--log-prompts", action="store_true", help="include prompt text in request logs (private!)")
    p.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")


def server_config(args) -> ServerConfig:
    return ServerConfig(
        host=args.host, port=args.port, max_queue=args.max_queue, default_max_tokens=args.default_max_tokens,
        max_tokens_limit=args.max_tokens_limit, max_request_bytes=args.max_request_bytes,
        api_keys=load_api_keys(args.api_key_file), metrics_port=args.metrics_port, metrics_host=args.metrics_host,
        drain_timeout_s=args.drain_timeout, log_prompts=args.log_prompts,
    )


def engine_config(args):
    from ..engine.config import EngineConfig

    speculation = args.speculation
    if args.draft_model is not None and speculation is None:
        speculation = "draft_model"
    extra = {k: v for k, v in (("max_num_seqs", args.max_num_seqs), ("kv_cache_bytes", args.kv_cache_bytes),
                               ("max_model_len", args.max_model_len), ("forced_runs", args.forced_runs),
                               ("speculation", speculation), ("draft_model", args.draft_model),
                               ("num_speculative_tokens", args.num_speculative_tokens)) if v is not None}
    return EngineConfig(model=args.model, device=args.device, **extra)


async def _serve(args) -> int:
    from ..engine.engine import AsyncEngine
    from .server import Server

    cfg = server_config(args)
    try:
        engine = AsyncEngine.from_config(engine_config(args))
    except (ValueError, FileNotFoundError) as e:   # e.g. a draft model of another tokenizer, a missing folder
        print(f"structgen serve: {e}", file=sys.stderr)
        return 2
    server = Server(engine, cfg)
    try:
        port = await server.start()
    except OSError as e:
        print(f"structgen serve: {e}", file=sys.stderr)
        return 1
    server.install_signal_handlers()
    print(f"structgen: listening on {cfg.host}:{port}"
          + (f", metrics on http://{cfg.metrics_host}:{server.metrics.http_port}/metrics"
             if server.metrics.http_port else "")
          + (" (API key required)" if cfg.auth_required else ""), flush=True)
    print("ready", flush=True)
    await server.wait_closed()
    print("structgen: stopped", flush=True)
    return 0


def run(args) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        server_config(args)  # validate every option before the (slow) model load
        engine_config(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"structgen serve: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args))
