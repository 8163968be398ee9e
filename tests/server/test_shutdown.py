"""SIGTERM during load, with `structgen serve` in a subprocess (as deployed): in-flight requests finish or get
UNAVAILABLE, new ones get UNAVAILABLE (or cannot connect), none hangs, and the process exits cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import structgen
from structgen import Client

ROOT = Path(__file__).resolve().parents[2]


def start_server(*args) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "structgen.cli", "serve", "--port", "0", "--http-port", "0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    port, lines = None, []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        port = int(m.group(1)) if m else port
        if line.strip() == "ready":
            return proc, port
    proc.kill()
    raise AssertionError(f"server did not become ready: {lines}")


@pytest.mark.slow
def test_sigterm_during_load_finishes_or_refuses():
    proc, port = start_server("--max-queue", "64", "--drain-timeout", "4", "--kv-cache-bytes", str(256 << 20))
    target = f"127.0.0.1:{port}"
    try:
        with Client(target, timeout=120) as c:
            assert c.health()
            short = dict(prompt="Is it raining? Answer:", choices=["yes", "no"], max_tokens=3)
            c.generate(**short)  # warm-up: the compile is not part of what is drained

            def one(i):
                # Mixed work: short requests finish inside the drain window; long ones (exactly 1000 chars,
                # hundreds of tokens) cannot, and must be told UNAVAILABLE.
                kw = short if i % 2 else dict(prompt=f"Story {i}:", regex="[a-z ]{1000}", max_tokens=400)
                try:
                    return c.generate(**kw).finish_reason
                except structgen.RemoteError as e:
                    return e

            with ThreadPoolExecutor(24) as pool:
                futures = [pool.submit(one, i) for i in range(24)]
                end = time.monotonic() + 60
                while c.server_info().load.running < 4 and time.monotonic() < end:
                    time.sleep(0.1)
                t_signal = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                results = [f.result(timeout=120) for f in futures]  # none hangs
                late = one(1)  # after SIGTERM: refused
            elapsed = time.monotonic() - t_signal
        finished = [r for r in results if r in ("stop", "length", "budget")]
        refused = [r for r in results if isinstance(r, structgen.Unavailable)]
        assert len(finished) + len(refused) == len(results), [r for r in results if r not in finished + refused]
        assert finished and refused
        assert isinstance(late, structgen.Unavailable)
        assert proc.wait(timeout=60) == 0
        assert elapsed < 60
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
