"""Prometheus metrics of one server, on an optional HTTP port.

Each Server owns its own CollectorRegistry, so several servers in one process (tests) never clash. Load
gauges (queue, running, KV) are read from the engine at scrape time instead of being pushed on every step.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Seconds. TTFT spans a cached short prompt on a GPU (~10 ms) to a long prompt queued on a CPU (~minutes).
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Seconds per output token: ~2 ms (GPU, big batch) to ~1 s (CPU, long context).
_TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2)


class ServerMetrics:
    """Counters and histograms the servicer records into; `load` is called at scrape time for gauges.

    `load()` returns a dict with any of: in_flight, queued, running, kv_blocks_used, kv_blocks_total.
    """

    def __init__(self, load: Callable[[], dict]):
        self.registry = CollectorRegistry()
        self.requests = Counter("structgen_requests", "Finished requests by method and gRPC status",
                                ["method", "status"], registry=self.registry)
        self.ttft = Histogram("structgen_time_to_first_token_seconds", "Arrival to first generated token",
                              buckets=_TTFT_BUCKETS, registry=self.registry)
        self.tpot = Histogram("structgen_time_per_output_token_seconds",
                              "Decode time per generated token after the first", buckets=_TPOT_BUCKETS,
                              registry=self.registry)
        self.prompt_tokens = Counter("structgen_prompt_tokens", "Prompt tokens of finished requests",
                                     registry=self.registry)
        self.cached_tokens = Counter("structgen_prompt_tokens_cached",
                                     "Prompt tokens served from the prefix cache", registry=self.registry)
        self.completion_tokens = Counter("structgen_completion_tokens", "Generated tokens",
                                         registry=self.registry)
        self.compiles = Counter("structgen_compiles", "Constraint compiles by compile-cache outcome",
                                ["cache"], registry=self.registry)
        self.registry.register(_LoadCollector(load, self))
        self.http_port: int | None = None
        self._http = None
        # Plain totals for the hit-ratio gauge (prometheus counters expose no public read).
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0

    def record_request(self, method: str, status: str, *, prompt_tokens: int = 0, cached_tokens: int = 0,
                       completion_tokens: int = 0, ttft_s: float | None = None, total_s: float | None = None):
        self.requests.labels(method=method, status=status).inc()
        self.prompt_tokens.inc(prompt_tokens)
        self.cached_tokens.inc(cached_tokens)
        self.prompt_tokens_total += prompt_tokens
        self.cached_tokens_total += cached_tokens
        self.completion_tokens.inc(completion_tokens)
        if ttft_s is not None and completion_tokens > 0:
            self.ttft.observe(ttft_s)
            if total_s is not None and completion_tokens > 1:
                self.tpot.observe(max(0.0, total_s - ttft_s) / (completion_tokens - 1))

    def record_compile(self, cache_hit: bool):
        self.compiles.labels(cache="hit" if cache_hit else "miss").inc()

    def serve_http(self, host: str, port: int) -> int:
        """Start the /metrics endpoint in a daemon thread; returns the bound port (port 0: a free one)."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.http_port = self._http.server_port
        return self.http_port

    def close(self):
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _LoadCollector:
    """Gauges computed on scrape: load from the engine, prefix-cache hit rate from the token counters."""

    def __init__(self, load: Callable[[], dict], metrics: ServerMetrics):
        self._load = load
        self._metrics = metrics

    def collect(self):
        load = self._load()
        for key, help_text in (("in_flight", "Requests held by the server (running + waiting)"),
                               ("queued", "Requests waiting in the engine's queue"),
                               ("running", "Sequences the engine is decoding")):
            g = GaugeMetricFamily(f"structgen_{key}", help_text)
            g.add_metric([], float(load.get(key, 0)))
            yield g
        used, total = load.get("kv_blocks_used", 0), load.get("kv_blocks_total", 0)
        g = GaugeMetricFamily("structgen_kv_cache_usage_ratio", "Fraction of KV blocks in use (0..1)")
        g.add_metric([], used / total if total else 0.0)
        yield g
        pool = load.get("compile") or {}
        if pool:
            c = CounterMetricFamily("structgen_compile_events", "Compile pool events: compiles started, workers "
                                    "killed past the time or memory limit, cancelled, crashed, refused (queue full)",
                                    labels=["event"])
            for event in ("compiles", "killed_timeout", "killed_memory", "cancelled", "crashed", "refused_queue_full"):
                c.add_metric([event], float(pool.get(event, 0)))
            yield c
            for key, help_text in (("pending", "Compiles in the compile pool (running or waiting)"),
                                   ("worker_memory_bytes", "Resident bytes of the compile worker processes")):
                g = GaugeMetricFamily(f"structgen_compile_{key}", help_text)
                g.add_metric([], float(pool.get(key, 0)))
                yield g
        prompt, cached = self._metrics.prompt_tokens_total, self._metrics.cached_tokens_total
        g = GaugeMetricFamily("structgen_prefix_cache_hit_ratio",
                              "Cached prompt tokens / prompt tokens, over the server's life")
        g.add_metric([], cached / prompt if prompt else 0.0)
        yield g

    def describe(self):
        return []
