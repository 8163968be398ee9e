"""Supervisor: N `structgen serve` replicas and one `sglang-router` in front of them, as child processes.

It starts the replicas in parallel on fixed ports (a replica restarted after a crash comes back on the same URL,
so the router's health checks bring it back without being told), waits until each prints `ready`, then starts
the router on the cluster's port. A replica that dies is restarted with exponential backoff, at most
`max_restarts` times in a row without a healthy minute between. `stop()` sends SIGTERM to every replica (each
turns its readiness off, keeps serving for the drain grace while the router notices, then drains), and only then
stops the router.

The processes themselves are real; the command lines come from `replica_command` / `router_command`, which is
what the unit tests swap for small stand-ins.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

LOG = logging.getLogger("structgen.cluster")

POLICIES = ("cache_aware", "round_robin", "power_of_two", "random")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """What one `structgen cluster` runs. Ports of 0 are picked free at start (then kept across restarts)."""

    replicas: int = 2
    port: int = 30000                       # the router's port: the cluster's one HTTP address
    host: str = "127.0.0.1"
    policy: str = "cache_aware"
    grpc_base_port: int = 0                 # replica i serves gRPC on base + i (0: free ports)
    http_base_port: int = 0                 # replica i serves HTTP on base + i (0: free ports)
    router_metrics_port: int = 0            # the router's own Prometheus endpoint (0: a free port)
    # The router polls each replica's /health this often and drops it after `health_failure_threshold` misses;
    # a replica's drain grace covers both, so the router stops sending before the replica starts refusing.
    health_check_interval_s: int = 2
    health_failure_threshold: int = 2
    # The router also opens a circuit on a replica after 10 failed requests (a crash under load does that) and
    # sends it nothing for this long, healthy or not; its default, 60 s, keeps a restarted replica idle a minute.
    circuit_breaker_timeout_s: int = 10
    threads_per_replica: int = 1            # torch threads each replica uses on CPU (0: torch's default)
    max_restarts: int = 5
    restart_backoff_s: float = 1.0          # doubled after each restart in a row, at most 30 s
    ready_timeout_s: float = 600.0
    serve_args: tuple[str, ...] = ()        # passed through to every `structgen serve`
    router_args: tuple[str, ...] = ()       # passed through to the router
    api_key: str | None = None              # the key the router sends to replicas started with --api-key-file

    def __post_init__(self):
        if not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {self.replicas!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        for name in ("port", "grpc_base_port", "http_base_port", "router_metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"{name} must be in [0, 65535], got {value}")
        if self.health_check_interval_s < 1 or self.health_failure_threshold < 1 or self.circuit_breaker_timeout_s < 1:
            raise ValueError("health_check_interval_s, health_failure_threshold and circuit_breaker_timeout_s must "
                             "be >= 1")
        if self.max_restarts < 0 or self.restart_backoff_s < 0 or self.threads_per_replica < 0:
            raise ValueError("max_restarts, restart_backoff_s and threads_per_replica must be >= 0")

    @property
    def drain_grace_s(self) -> float:
        """How long a stopping replica keeps serving after its /health turned 503: the router needs up to
        interval x threshold to see it, plus one interval for a check already in flight."""
        return float(self.health_check_interval_s * (self.health_failure_threshold + 1))


@dataclasses.dataclass
class Replica:
    index: int
    grpc_port: int
    http_port: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0                       # in a row: reset once a replica stayed up for a minute
    restarts_total: int = 0
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    gave_up: bool = False

    def url(self, host: str) -> str:
        return f"http://{_connect_host(host)}:{self.http_port}"


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host


def replica_command(cfg: ClusterConfig, replica: Replica) -> list[str]:
    return [sys.executable, "-m", "structgen.cli", "serve", "--host", cfg.host, "--port", str(replica.grpc_port),
            "--http-port", str(replica.http_port), "--num-threads", str(cfg.threads_per_replica),
            "--drain-grace", str(cfg.drain_grace_s), *cfg.serve_args]


def router_command(cfg: ClusterConfig, worker_urls: list[str], metrics_port: int) -> list[str]:
    cmd = [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *worker_urls,
           "--host", cfg.host, "--port", str(cfg.port), "--policy", cfg.policy,
           "--prometheus-host", cfg.host, "--prometheus-port", str(metrics_port),
           "--health-check-interval-secs", str(cfg.health_check_interval_s),
           "--health-failure-threshold", str(cfg.health_failure_threshold),
           # one good check brings a restarted replica back; the router has just seen it answer
           "--health-success-threshold", "1",
           "--cb-timeout-duration-secs", str(cfg.circuit_breaker_timeout_s), "--log-level", "warn"]
    if cfg.api_key:
        cmd += ["--api-key", cfg.api_key]
    return cmd + list(cfg.router_args)


class Supervisor:
    """Owns the cluster's processes. `start()` blocks until the router routes; `stop()` drains and stops all."""

    def __init__(self, cfg: ClusterConfig, *, log=None, replica_cmd=replica_command, router_cmd=router_command):
        self.cfg = cfg
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._replica_cmd = replica_cmd
        self._router_cmd = router_cmd
        base_g, base_h = cfg.grpc_base_port, cfg.http_base_port
        self.replicas = [Replica(i, base_g + i if base_g else free_port(cfg.host),
                                 base_h + i if base_h else free_port(cfg.host)) for i in range(cfg.replicas)]
        self.router_metrics_port = cfg.router_metrics_port or free_port(cfg.host)
        self.router: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()       # process handles: the monitor thread and stop() both touch them
        self._monitor: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{_connect_host(self.cfg.host)}:{self.cfg.port}"

    @property
    def router_metrics_url(self) -> str:
        return f"http://{_connect_host(self.cfg.host)}:{self.router_metrics_port}/metrics"

    # ---- processes ------------------------------------------------------------------------------------------

    def _spawn(self, cmd: list[str], name: str, on_line=None) -> subprocess.Popen:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # NOTE: its own process group, so a Ctrl-C in the terminal reaches the supervisor only, which then stops
        # every child in order (replicas drain before the router goes).
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, text=True, errors="replace", bufsize=1, start_new_session=True)

        def pump():
            for line in proc.stdout:
                line = line.rstrip("\n")
                if on_line is not None:
                    on_line(line)
                self._log(f"[{name}] {line}")

        threading.Thread(target=pump, name=f"cluster-{name}-log", daemon=True).start()
        return proc

    def _start_replica(self, r: Replica):
        r.ready.clear()
        r.started_at = time.monotonic()

        def on_line(line):
            if line.strip() == "ready":
                r.ready.set()

        r.process = self._spawn(self._replica_cmd(self.cfg, r), f"replica {r.index}", on_line)

    def start(self) -> "Supervisor":
        """Start every replica (in parallel), wait until all are ready, start the router, wait until it routes."""
        for r in self.replicas:
            self._start_replica(r)
        end = time.monotonic() + self.cfg.ready_timeout_s
        for r in self.replicas:
            while not r.ready.wait(0.2):
                if r.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"replica {r.index} exited with code {r.process.returncode} before it was "
                                       f"ready (its output is above)")
                if time.monotonic() > end:
                    self.stop()
                    raise TimeoutError(f"replica {r.index} was not ready within {self.cfg.ready_timeout_s:.0f} s")
        self._start_router()
        self._wait_router_ready(end)
        self._monitor = threading.Thread(target=self._watch, name="cluster-monitor", daemon=True)
        self._monitor.start()
        return self

    def _start_router(self):
        urls = [r.url(self.cfg.host) for r in self.replicas]
        self.router = self._spawn(self._router_cmd(self.cfg, urls, self.router_metrics_port), "router")

    def _wait_router_ready(self, end: float):
        """The router answers /readiness 200 once it has registered and health-checked its workers."""
        while True:
            try:
                r = httpx.get(self.url + "/readiness", timeout=2)
                if r.status_code == 200 and r.json().get("healthy_workers", 0) >= len(self.replicas):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if self.router.poll() is not None:
                self.stop()
                raise RuntimeError(f"the router exited with code {self.router.returncode} (its output is above)")
            if time.monotonic() > end:
                self.stop()
                raise TimeoutError("the router did not register every replica in time")
            time.sleep(0.3)

    # ---- supervision ----------------------------------------------------------------------------------------

    def _watch(self):
        """Restart whatever dies, until stop(): replicas with backoff and a limit, the router at once."""
        pending: dict[int, float] = {}      # replica index -> when to restart it
        while not self._stopping.wait(0.25):
            now = time.monotonic()
            with self._lock:
                if self._stopping.is_set():
                    return
                for r in self.replicas:
                    if r.gave_up or r.process is None:
                        continue
                    if r.process.poll() is None:
                        if r.restarts and r.ready.is_set() and now - r.started_at > 60:
                            r.restarts = 0  # stayed up: the next crash starts the backoff over
                        continue
                    if r.index not in pending:
                        if r.restarts >= self.cfg.max_restarts:
                            r.gave_up = True
                            self._log(f"[cluster] replica {r.index} exited with code {r.process.returncode}; "
                                      f"{r.restarts} restarts in a row failed, not restarting it again")
                            continue
                        delay = min(self.cfg.restart_backoff_s * 2 ** r.restarts, 30.0)
                        pending[r.index] = now + delay
                        self._log(f"[cluster] replica {r.index} exited with code {r.process.returncode}; "
                                  f"restarting it in {delay:.1f} s")
                    elif now >= pending[r.index]:
                        del pending[r.index]
                        r.restarts += 1
                        r.restarts_total += 1
                        self._start_replica(r)
                if self.router is not None and self.router.poll() is not None:
                    self._log(f"[cluster] the router exited with code {self.router.returncode}; restarting it")
                    self._start_router()

    def kill_replica(self, index: int):
        """SIGKILL one replica (what a crash looks like); the monitor restarts it."""
        with self._lock:
            self.replicas[index].process.kill()

    # ---- stopping -------------------------------------------------------------------------------------------

    def stop(self, timeout_s: float | None = None):
        """SIGTERM every replica (they drain: readiness off, grace, in-flight finish), wait, then stop the router.
        Anything still running after `timeout_s` (default: grace + 60 s) is killed."""
        self._stopping.set()
        timeout_s = self.cfg.drain_grace_s + 60 if timeout_s is None else timeout_s
        with self._lock:
            procs = [r.process for r in self.replicas if r.process is not None]
            for p in procs:
                _signal(p, signal.SIGTERM)
            end = time.monotonic() + timeout_s
            for p in procs:
                _wait_or_kill(p, end)
            if self.router is not None:
                _signal(self.router, signal.SIGTERM)
                _wait_or_kill(self.router, time.monotonic() + 10)

    def __enter__(self) -> "Supervisor":
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _signal(proc: subprocess.Popen, sig: int):
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def _wait_or_kill(proc: subprocess.Popen, end: float):
    try:
        proc.wait(max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        LOG.warning("pid %d did not stop in time; killing it", proc.pid)
        proc.kill()
        proc.wait(10)


def log_to_file(path: Path):
    """A `log` for Supervisor that appends every child's lines to one file (tests, benchmarks)."""
    lock = threading.Lock()
    fh = open(path, "a", buffering=1)

    def log(line: str):
        with lock:
            fh.write(line + "\n")
    return log
