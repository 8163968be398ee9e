"""Benchmark: the SDK over two replicas, balance="affinity" vs "round_robin", with one replica alone as the baseline.

Each replica is a `structgen serve` subprocess (its own process, engine, radix cache and compile cache, like a
separate machine; the on-disk FSM cache is off so replicas share nothing) started fresh for every run, so every
configuration starts cold. The workload is `--schemas` extraction schemas from the dev set, `--docs` documents
each (the dev texts, rotated), sent shuffled (every schema active at once: the case where affinity matters)
by one `Client` with `--concurrency` calls in flight. Read from each server's /metrics afterwards: the share of
prompt tokens served from the prefix cache, the constraint compiles that missed the compile cache, and how the
requests split over the replicas. Medians over `--rounds`.

    .venv/bin/python benchmarks/bench_replicas.py [--schemas 12] [--docs 4] [--concurrency 8] [--max-tokens 64]
        [--rounds 2] [--threads 1] [--load-factors 2] [--data ../shared/data/extraction/dev]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from structgen import Client
from structgen.client import BudgetClosedWarning, balancer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACTOR = balancer.AFFINITY_LOAD_FACTOR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """One `structgen serve` subprocess with a metrics endpoint."""

    def __init__(self, threads: int):
        self.metrics_port = free_port()
        env = {**os.environ, "STRUCTGEN_DISABLE_DISK_CACHE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "structgen.cli", "serve", "--port", "0", "--http-port", "0",
             "--metrics-port", str(self.metrics_port), "--kv-cache-bytes", str(256 << 20), "--num-threads",
             str(threads), "--log-level", "WARNING"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = None
        for line in self.proc.stdout:
            m = re.search(r"listening on [\d.]+:(\d+)", line)
            port = int(m.group(1)) if m else port
            if line.strip() == "ready":
                break
        if port is None or self.proc.poll() is not None:
            raise RuntimeError("structgen serve did not start")
        self.target = f"127.0.0.1:{port}"

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def workload(data: Path, schemas: int, docs: int) -> list[tuple[dict, str]]:
    items = [json.loads(p.read_text()) for p in sorted(data.glob("*.json"))]
    if len(items) < schemas:
        raise SystemExit(f"{data} has {len(items)} items, fewer than --schemas {schemas}")
    chosen = items[:schemas]
    requests = [(chosen[s]["schema"], items[(s + d) % len(items)]["text"]) for d in range(docs) for s in range(schemas)]
    # Shuffled (fixed seed): every schema in flight at once, and no period that round robin could line up with
    # (schemas sent strictly in turn to 2 replicas would land on the same replica every time: affinity by accident).
    random.Random(0).shuffle(requests)
    return requests


def run(config: str, requests, args) -> dict:
    replicas = [Replica(args.threads) for _ in range(1 if config == "one replica" else 2)]
    try:
        balance, _, factor = config.partition(" x")
        balance = "affinity" if config == "one replica" else balance
        # NOTE: the pick reads the module's bound at each call; set per configuration, restored below.
        balancer.AFFINITY_LOAD_FACTOR = float(factor) if factor else DEFAULT_FACTOR
        targets = replicas[0].target if len(replicas) == 1 else [r.target for r in replicas]
        with Client(targets, timeout=600, balance=balance) as client:
            errors = 0

            def one(req):
                nonlocal errors
                try:
                    client.extract(req[1], req[0], max_tokens=args.max_tokens)
                except Exception:  # noqa: BLE001 - counted and reported in the table
                    errors += 1

            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(one, requests))
            wall = time.perf_counter() - start
        ms = [r.metrics() for r in replicas]
    finally:
        balancer.AFFINITY_LOAD_FACTOR = DEFAULT_FACTOR
        for r in replicas:
            r.stop()
    prompt = sum(m.get("structgen_prompt_tokens_total", 0) for m in ms)
    cached = sum(m.get("structgen_prompt_tokens_cached_total", 0) for m in ms)
    misses = sum(m.get('structgen_compiles_total{cache="miss"}', 0) for m in ms)
    split = [int(sum(v for k, v in m.items() if k.startswith("structgen_requests_total{"))) for m in ms]
    return {"wall": wall, "hit": cached / prompt if prompt else 0.0, "misses": misses, "split": split,
            "errors": errors}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemas", type=int, default=12)
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per replica (one core each)")
    ap.add_argument("--load-factors", type=float, nargs="*", default=[],
                    help="also run affinity with these load bounds (the SDK's is balancer.AFFINITY_LOAD_FACTOR)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "extraction" / "dev")
    args = ap.parse_args()
    warnings.simplefilter("ignore", BudgetClosedWarning)  # a budget-closed value is still a valid answer here
    requests = workload(args.data, args.schemas, args.docs)
    configs = ["one replica", "round_robin", "affinity"] + [f"affinity x{f:g}" for f in args.load_factors]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for c in configs:
            results[c].append(run(c, requests, args))
            print(f"round {r + 1} {c}: {results[c][-1]}", file=sys.stderr, flush=True)
    print(f"\n{len(requests)} extractions ({args.schemas} schemas x {args.docs} documents, shuffled), "
          f"{args.concurrency} in flight, max_tokens {args.max_tokens}, {args.threads} torch thread(s) per replica; "
          f"median of {args.rounds} rounds, every run on fresh replicas\n")
    print("| configuration | wall s | docs/s | vs one replica | prefix-cache hit (prompt tokens) | compile misses "
          "| requests per replica | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base = statistics.median(x["wall"] for x in results["one replica"])
    for c in configs:
        runs = results[c]
        wall = statistics.median(x["wall"] for x in runs)
        print(f"| {c} | {wall:.1f} | {len(requests) / wall:.2f} | {base / wall:.2f}x | "
              f"{100 * statistics.median(x['hit'] for x in runs):.1f}% | "
              f"{statistics.median(x['misses'] for x in runs):.0f} | {'/'.join(map(str, runs[-1]['split']))} | "
              f"{sum(x['errors'] for x in runs)} |")


if __name__ == "__main__":
    main()
