"""Issue 14 against a real `structgen serve` (subprocess, real model, real compile workers): hostile inputs end with a
clear status inside their deadline, good requests are answered during and after, memory stays bounded, and SIGTERM
during a hostile compile exits promptly with the compile workers gone. Inputs: structgen/bench/hostile.py."""

from __future__ import annotations

import json
import random
import signal
import threading
import time

import grpc
import pytest

from structgen._proto import structgen_pb2 as pb
from structgen._proto import structgen_pb2_grpc as pb_grpc
from structgen.bench.hostile import DEADLINE_GRACE_S, _descendants, hostile_cases, rss_mb, run_hostile, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

COMPILE_TIMEOUT_S = 10.0
SERVE_ARGS = ["--kv-cache-bytes", str(256 << 20), "--drain-timeout", "5", "--max-num-seqs", "16"]
# Resident memory the server (with its compile workers) may gain over a whole hostile run. Measured on this machine
# (benchmarks/RESULTS.md): +900 MiB after one round, +980 after three (it plateaus: the compile cache's 256 MiB of
# tables, the allocator's arenas after prompts of thousands of tokens, workers replaced once 256 MiB above their
# start). The bound leaves room for a noisy machine; the issue's server grew by 16.7 GB.
MEMORY_GROWTH_BOUND_MB = 1536


@pytest.fixture(scope="module")
def server():
    # No disk cache: every compile here is a first one, as a new hostile input would be.
    proc, target = start_server(SERVE_ARGS, env={"STRUCTGEN_COMPILE_TIMEOUT_S": str(COMPILE_TIMEOUT_S),
                                                 "STRUCTGEN_DISABLE_DISK_CACHE": "1"})
    yield proc, target
    proc.kill()
    proc.wait()


def _stub(target):
    ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1),
                                                ("grpc.max_send_message_length", 64 << 20)])
    return ch, pb_grpc.StructGenStub(ch)


def _slow_choices(seed: int, n: int = 60_000) -> list[str]:
    rng = random.Random(seed)
    return sorted({"".join(rng.choice("abcdefghijklmnop") for _ in range(14)) for _ in range(n)})


def _timed(fn, *args, **kw):
    t0 = time.monotonic()
    try:
        fn(*args, **kw)
        return "OK", "", time.monotonic() - t0
    except grpc.RpcError as e:
        return e.code().name, e.details() or "", time.monotonic() - t0


NAMED = {
    # The issue's cases. Each must end well inside the compile limit, with the status a person can act on.
    "minLength 1e9": ({"type": "string", "minLength": 1_000_000_000}, "minLength"),
    "pattern a?^3000 a^3000": ({"type": "string", "pattern": "a?" * 3000 + "a" * 3000}, "pattern"),
    "maxLength 1e400": ('{"maxLength": 1e400}', "maxLength"),
    "nested 400 objects": (None, "nest"),
}


@pytest.mark.parametrize("name", list(NAMED))
def test_the_issue_cases_end_fast_with_invalid_argument(server, name):
    _, target = server
    schema, needle = NAMED[name]
    if schema is None:
        schema = {"type": "string"}
        for _ in range(400):
            schema = {"type": "object", "properties": {"a": schema}}
    text = schema if isinstance(schema, str) else json.dumps(schema)
    ch, stub = _stub(target)
    with ch:
        for call, req in ((stub.Generate, pb.GenerateRequest(prompt="JSON:", max_tokens=32,
                                                              constraint=pb.Constraint(json_schema=text))),
                          (stub.Compile, pb.CompileRequest(constraint=pb.Constraint(json_schema=text)))):
            status, message, elapsed = _timed(call, req, timeout=60)
            if call is stub.Compile and status == "OK":
                continue  # a huge-but-lazy constraint may compile; the Generate above is what must be refused
            assert status == "INVALID_ARGUMENT", (status, message)
            assert needle in message or "budget" in message, message
            assert elapsed < COMPILE_TIMEOUT_S + DEADLINE_GRACE_S, elapsed


def test_a_deadline_ends_a_compile_and_others_are_served_meanwhile(server):
    _, target = server
    ch, stub = _stub(target)
    other_ch, other = _stub(target)
    with ch, other_ch:
        # ~2 s of compile on a quiet machine: well past the deadline, well inside the server's limit.
        slow = pb.CompileRequest(constraint=pb.Constraint(choice=pb.ChoiceList(choices=_slow_choices(1, 30_000))))
        results = {}
        t = threading.Thread(target=lambda: results.setdefault("slow", _timed(stub.Compile, slow, timeout=0.8)))
        t.start()
        time.sleep(0.3)
        good = pb.CompileRequest(constraint=pb.Constraint(json_schema=json.dumps(
            {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}})))
        status, _, elapsed = _timed(other.Compile, good, timeout=30)
        t.join()
        assert status == "OK" and elapsed < 10.0, (status, elapsed)
        status, message, elapsed = results["slow"]
        assert status == "DEADLINE_EXCEEDED" and elapsed < 0.8 + DEADLINE_GRACE_S, (status, message, elapsed)
        # The same constraint with the server's whole limit compiles: a deadline failure is not held against it.
        status, message, elapsed = _timed(stub.Compile, slow, timeout=60)
        assert status == "OK", (status, message)


def test_a_fuzz_run_ends_every_call_clearly_and_memory_stays_bounded(server):
    proc, target = server
    cases = hostile_cases(seed=0)
    assert len(cases) > 120
    report = run_hostile(target, cases, deadline_s=15.0, connections=4, concurrency=8, server_pid=proc.pid)
    print("\n" + report.summary())
    assert not report.unclear(), [(o.name, o.status, o.message[:200]) for o in report.unclear()]
    assert not report.stalled(), [(o.name, o.elapsed_s) for o in report.stalled()]
    assert report.probes and all(ok for _, ok, _ in report.probes), report.probes
    statuses = report.statuses()
    assert statuses["INVALID_ARGUMENT"] > len(cases) // 3, statuses
    start, end = report.memory_mb[0][1], report.memory_mb[-1][1]
    assert end - start < MEMORY_GROWTH_BOUND_MB, (start, end)


def test_sigterm_during_a_hostile_compile_exits_and_kills_the_workers():
    proc, target = start_server(SERVE_ARGS, env={"STRUCTGEN_DISABLE_DISK_CACHE": "1"})
    try:
        ch, stub = _stub(target)
        with ch:
            slow = pb.CompileRequest(constraint=pb.Constraint(choice=pb.ChoiceList(choices=_slow_choices(2, 120_000))))
            results = {}
            t = threading.Thread(target=lambda: results.setdefault("slow", _timed(stub.Compile, slow, timeout=120)))
            t.start()
            workers = []
            end = time.monotonic() + 30
            while not workers and time.monotonic() < end:
                workers = _descendants(proc.pid)
                time.sleep(0.1)
            assert workers, "no compile worker started"
            time.sleep(1.0)  # mid-compile
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            exit_s = time.monotonic() - t0
            t.join(timeout=30)
        assert code == 0 and exit_s < 5 + 10, exit_s  # drain timeout + the stop's own grace
        assert results["slow"][0] in ("UNAVAILABLE", "CANCELLED"), results["slow"]
        time.sleep(0.5)
        assert not [w for w in workers if rss_mb(w) > 0], "compile workers outlived the server"
    finally:
        if proc.poll() is None:
            proc.kill()
