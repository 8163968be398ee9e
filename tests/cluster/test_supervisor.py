"""The supervisor's own logic with small stand-in processes (no model, no router binary): replicas started in
parallel and waited for, a dead replica restarted on the same ports with backoff, one that keeps crashing given up
on, SIGTERM to the replicas before the router. tests/cluster/test_cluster_e2e.py runs the real thing."""

from __future__ import annotations

import json
import sys
import time

import pytest

from structgen.cluster.cli import add_arguments, config_from_args
from structgen.cluster.supervisor import ClusterConfig, Supervisor, free_port

# A replica: prints its ports, "ready", then waits; on SIGTERM it notes the time in its record file and exits.
REPLICA = r"""
import json, signal, sys, time
record, crash = sys.argv[1], sys.argv[2] == "crash"
if crash:
    sys.exit(3)
def stop(*_):
    with open(record, "a") as f:
        f.write(json.dumps({"who": "replica", "t": time.time()}) + "\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("listening", *sys.argv[3:], flush=True)
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""

# The router: answers /readiness with every worker healthy; notes when SIGTERM reached it.
ROUTER = r"""
import json, signal, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
record, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def stop(*_):
    with open(record, "a") as f:
        f.write(json.dumps({"who": "router", "t": time.time()}) + "\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"healthy_workers": n}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture
def stand_ins(tmp_path):
    record = tmp_path / "record.jsonl"
    crashing: set[int] = set()
    lines: list[str] = []

    def replica_cmd(cfg, r):
        return [sys.executable, "-c", REPLICA, str(record), "crash" if r.index in crashing else "ok",
                str(r.grpc_port), str(r.http_port)]

    def router_cmd(cfg, urls, metrics_port):
        return [sys.executable, "-c", ROUTER, str(record), str(cfg.port), str(len(urls))]

    def make(**kw):
        cfg = ClusterConfig(**{"replicas": 3, "port": free_port(), "restart_backoff_s": 0.2, **kw})
        return Supervisor(cfg, log=lines.append, replica_cmd=replica_cmd, router_cmd=router_cmd)

    make.record, make.crashing, make.lines = record, crashing, lines
    return make


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_killed_replica_comes_back_on_its_ports_and_stop_goes_replicas_first(stand_ins):
    sup = stand_ins().start()
    try:
        assert all(r.ready.is_set() for r in sup.replicas)
        ports = [(r.grpc_port, r.http_port) for r in sup.replicas]
        assert len({p for pair in ports for p in pair}) == 6  # every replica its own two ports
        old = sup.replicas[1].process.pid
        sup.kill_replica(1)
        assert _wait(lambda: sup.replicas[1].process.pid != old and sup.replicas[1].ready.is_set())
        assert sup.replicas[1].restarts_total == 1 and (sup.replicas[1].grpc_port, sup.replicas[1].http_port) == \
            ports[1]
        assert any(f"[replica 1] listening {ports[1][0]} {ports[1][1]}" in line for line in stand_ins.lines[-5:])
        assert any("replica 1 exited" in line and "restarting it in 0.2 s" in line for line in stand_ins.lines)
        assert all(r.restarts_total == 0 for r in sup.replicas if r.index != 1)
    finally:
        sup.stop()
    events = [json.loads(line) for line in stand_ins.record.read_text().splitlines()]
    assert [e["who"] for e in events].count("replica") == 3
    router_t = next(e["t"] for e in events if e["who"] == "router")
    assert all(e["t"] <= router_t for e in events if e["who"] == "replica")  # the router goes last
    assert all(r.process.poll() is not None for r in sup.replicas) and sup.router.poll() is not None


def test_a_replica_that_keeps_crashing_is_given_up_on_and_the_rest_serve(stand_ins):
    make = stand_ins
    sup = make(replicas=2, max_restarts=2)
    sup.start()
    try:
        make.crashing.add(0)   # from now on replica 0 exits at once whenever it starts
        sup.kill_replica(0)
        assert _wait(lambda: sup.replicas[0].gave_up)
        assert sup.replicas[0].restarts_total == 2
        assert any("2 restarts in a row failed, not restarting it again" in line for line in make.lines)
        assert sup.replicas[1].process.poll() is None and sup.router.poll() is None
    finally:
        sup.stop()


def test_a_replica_that_dies_before_ready_fails_start_and_stops_everything(stand_ins):
    stand_ins.crashing.add(2)
    sup = stand_ins()
    with pytest.raises(RuntimeError, match="replica 2 exited with code 3 before it was ready"):
        sup.start()
    assert all(r.process.poll() is not None for r in sup.replicas)


def test_the_drain_grace_covers_the_routers_health_checks():
    assert ClusterConfig(health_check_interval_s=2, health_failure_threshold=2).drain_grace_s == 6.0
    with pytest.raises(ValueError, match="replicas"):
        ClusterConfig(replicas=0)
    with pytest.raises(ValueError, match="policy"):
        ClusterConfig(policy="fastest")


def test_command_line_passes_serve_arguments_and_the_first_api_key(tmp_path):
    import argparse

    keys = tmp_path / "keys"
    keys.write_text("k2\nk1\n")
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--replicas", "4", "--port", "9000", "--policy", "round_robin",
                                         "--api-key-file", str(keys), "--", "--max-num-seqs", "8"]))
    assert (cfg.replicas, cfg.port, cfg.policy) == (4, 9000, "round_robin")
    assert cfg.serve_args == ("--max-num-seqs", "8", "--api-key-file", str(keys))
    assert cfg.api_key == "k1"
