"""`structgen cluster --replicas N --port P`: N `structgen serve` replicas behind `sglang-router` on port P.

Prints where the router, each replica (gRPC and HTTP) and the metrics listen, then `ready`; restarts a replica
that dies; SIGTERM or Ctrl-C drains the replicas (the router stops sending first), then stops the router.
Arguments after `--` go to every `structgen serve` unchanged (e.g. `-- --max-num-seqs 16 --model PATH`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .supervisor import POLICIES, ClusterConfig, Supervisor


def add_arguments(p: argparse.ArgumentParser):
    d = ClusterConfig()
    p.add_argument("--replicas", type=int, default=d.replicas, help=f"structgen serve processes (default: {d.replicas})")
    p.add_argument("--port", type=int, default=d.port, help=f"the router's HTTP port (default: {d.port})")
    p.add_argument("--host", default=d.host, help=f"address of the router and replicas (default: {d.host})")
    p.add_argument("--policy", default=d.policy, choices=POLICIES, help=f"routing policy (default: {d.policy})")
    p.add_argument("--grpc-base-port", type=int, default=0,
                   help="replica i serves gRPC on this + i (default: free ports)")
    p.add_argument("--http-base-port", type=int, default=0,
                   help="replica i serves HTTP (and /metrics) on this + i (default: free ports)")
    p.add_argument("--router-metrics-port", type=int, default=0,
                   help="the router's own Prometheus /metrics (default: a free port)")
    p.add_argument("--health-check-interval", type=int, default=d.health_check_interval_s,
                   help=f"seconds between the router's /health checks of each replica (default: "
                        f"{d.health_check_interval_s})")
    p.add_argument("--health-failure-threshold", type=int, default=d.health_failure_threshold,
                   help=f"failed checks before the router stops sending to a replica (default: "
                        f"{d.health_failure_threshold})")
    p.add_argument("--threads-per-replica", type=int, default=d.threads_per_replica,
                   help=f"torch CPU threads per replica, 0 = torch's default (default: {d.threads_per_replica})")
    p.add_argument("--max-restarts", type=int, default=d.max_restarts,
                   help=f"restarts in a row of a crashing replica before giving up on it (default: {d.max_restarts})")
    p.add_argument("--api-key-file", default=None,
                   help="passed to every replica; the router sends the file's first key to them")
    p.add_argument("--router-arg", action="append", default=[], metavar="ARG",
                   help="an extra sglang-router argument (repeatable, e.g. --router-arg=--retry-max-retries=3)")
    p.add_argument("serve_args", nargs=argparse.REMAINDER,
                   help="after --: arguments for every structgen serve")


def config_from_args(args) -> ClusterConfig:
    serve_args = list(args.serve_args)
    if serve_args[:1] == ["--"]:
        serve_args = serve_args[1:]
    api_key = None
    if args.api_key_file:
        from ..server.config import load_api_keys

        keys = sorted(load_api_keys(args.api_key_file))
        if not keys:
            raise ValueError(f"{args.api_key_file}: no API key in it")
        api_key = keys[0]
        serve_args += ["--api-key-file", args.api_key_file]
    return ClusterConfig(replicas=args.replicas, port=args.port, host=args.host, policy=args.policy,
                         grpc_base_port=args.grpc_base_port, http_base_port=args.http_base_port,
                         router_metrics_port=args.router_metrics_port,
                         health_check_interval_s=args.health_check_interval,
                         health_failure_threshold=args.health_failure_threshold,
                         threads_per_replica=args.threads_per_replica, max_restarts=args.max_restarts,
                         serve_args=tuple(serve_args), router_args=tuple(args.router_arg), api_key=api_key)


def run(args) -> int:
    try:
        cfg = config_from_args(args)
    except (ValueError, OSError) as e:
        print(f"structgen cluster: {e}", file=sys.stderr)
        return 2
    import importlib.util

    if importlib.util.find_spec("sglang_router") is None:
        print("structgen cluster: sglang-router is not installed (pip install 'structgen[clients]')",
              file=sys.stderr)
        return 2
    sup = Supervisor(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        sup.start()
    except (RuntimeError, TimeoutError, OSError) as e:
        print(f"structgen cluster: {e}", file=sys.stderr)
        return 1
    for r in sup.replicas:
        print(f"structgen cluster: replica {r.index}: gRPC {cfg.host}:{r.grpc_port}, HTTP {r.url(cfg.host)} "
              f"(metrics {r.url(cfg.host)}/metrics)", flush=True)
    print(f"structgen cluster: router ({cfg.policy}) on {sup.url}, its metrics on {sup.router_metrics_url}",
          flush=True)
    print("ready", flush=True)
    while not stop.wait(0.5):  # a timed wait, so the signal handler runs promptly
        pass
    print("structgen cluster: stopping (replicas drain, then the router)", flush=True)
    sup.stop()
    print("structgen cluster: stopped", flush=True)
    return 0
