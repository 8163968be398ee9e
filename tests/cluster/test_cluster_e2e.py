"""A real cluster: 3 `structgen serve` replicas (the embedded model) behind the real sglang-router, on loopback.

200 mixed extraction requests (the extraction dev set's schemas and texts, over SGLang's /generate and OpenAI's
/v1/chat/completions) are each answered once with a valid value; a replica killed with SIGKILL under load loses no
request and the router stops sending to it; the supervisor restarts it and it takes traffic again.

Round-robin routing here (cache-aware is measured in `structgen bench cluster`): it spreads requests evenly, so
"the restarted replica gets traffic again" is a certainty to assert rather than a matter of prefix luck.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jsonschema
import pytest

from structgen.bench.cases import default_data_dir
from structgen.cluster.metrics import answered, scrape
from structgen.cluster.supervisor import ClusterConfig, Supervisor, free_port, log_to_file

pytestmark = pytest.mark.slow

DEV = default_data_dir() / "extraction" / "dev"
MAX_TOKENS = 40
RETRYABLE = {429, 502, 503, 504}   # what a client (the openai SDK, ours) retries on another try


def _items() -> list[dict]:
    if not DEV.is_dir():
        pytest.skip(f"extraction dev set not found at {DEV} (set STRUCTGEN_DATA_DIR)")
    return [json.loads(p.read_text()) for p in sorted(DEV.glob("*.json"))]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("sglang_router")
    log = tmp_path_factory.mktemp("cluster") / "cluster.log"
    cfg = ClusterConfig(replicas=3, port=free_port(), policy="round_robin", health_check_interval_s=1,
                        health_failure_threshold=1, restart_backoff_s=0.5, ready_timeout_s=300,
                        serve_args=("--max-num-seqs", "16", "--compile-workers", "1"))
    sup = Supervisor(cfg, log=log_to_file(log))
    try:
        sup.start()
    except Exception as e:
        raise AssertionError(f"the cluster did not start: {e}\n{log.read_text()[-3000:]}") from None
    yield sup
    t0 = time.monotonic()
    sup.stop()
    assert time.monotonic() - t0 < cfg.drain_grace_s + 30
    assert all(r.process.poll() is not None for r in sup.replicas) and sup.router.poll() is not None


def _request(i: int, item: dict) -> tuple[str, dict]:
    """Request i: even ones over SGLang's /generate, odd ones over OpenAI's chat API; the request id travels."""
    schema = item["schema"]
    prompt = f"Extract the arguments of this request as JSON.\nRequest: {item['text']}\nJSON:"
    if i % 2 == 0:
        return "/generate", {"text": prompt, "rid": f"req-{i}", "sampling_params": {
            "max_new_tokens": MAX_TOKENS, "temperature": 0, "json_schema": json.dumps(schema)}}
    return "/v1/chat/completions", {
        "model": "any", "temperature": 0, "max_tokens": MAX_TOKENS, "user": f"req-{i}",
        "messages": [{"role": "user", "content": prompt}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "args", "schema": schema}}}


def _text(path: str, body: dict) -> str:
    return body["text"] if path == "/generate" else body["choices"][0]["message"]["content"]


async def _send_all(url: str, requests: list[tuple[str, dict]], concurrency: int, on_started=None):
    """Every request sent (with `concurrency` in flight); a retryable status is retried, as a client SDK would.
    Returns per request: (final status, text, tries)."""
    sem = asyncio.Semaphore(concurrency)
    results: list = [None] * len(requests)

    async def one(c, i):
        path, body = requests[i]
        async with sem:
            for tries in range(1, 6):
                try:
                    r = await c.post(url + path, json=body, timeout=300)
                except httpx.TransportError as e:
                    status, text = "transport", repr(e)
                else:
                    status, text = r.status_code, r.text
                    if status == 200:
                        text = _text(path, r.json())
                if status == 200 or status not in RETRYABLE and status != "transport":
                    break
                await asyncio.sleep(0.5 * tries)
            results[i] = (status, text, tries)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as c:
        tasks = [asyncio.create_task(one(c, i)) for i in range(len(requests))]
        if on_started is not None:
            await on_started()
        await asyncio.gather(*tasks)
    return results


def _check_valid(requests, results, items_of):
    bad = []
    for i, (status, text, _) in enumerate(results):
        if status != 200:
            bad.append((i, status, text[:300]))
            continue
        try:
            jsonschema.Draft202012Validator(items_of[i]["schema"]).validate(json.loads(text))
        except (ValueError, jsonschema.ValidationError) as e:
            bad.append((i, "invalid", f"{text[:200]!r}: {e}"[:300]))
    assert not bad, bad[:10]


def _answered(sup) -> float:
    return sum(answered(scrape(r.url(sup.cfg.host) + "/metrics")) for r in sup.replicas)


def _workers(sup) -> dict[str, bool]:
    return {w["url"]: w["is_healthy"] for w in httpx.get(sup.url + "/workers", timeout=10).json()["workers"]}


def test_200_mixed_requests_each_answered_once_and_valid(cluster):
    items = _items()
    chosen = [items[i % len(items)] for i in range(200)]
    requests = [_request(i, item) for i, item in enumerate(chosen)]
    before = _answered(cluster)
    results = asyncio.run(_send_all(cluster.url, requests, concurrency=24))
    _check_valid(requests, results, chosen)
    assert all(tries == 1 for _, _, tries in results), "no replica failed: nothing should need a client retry"
    # Server side: the replicas together finished exactly 200 requests, so none ran twice (a router retry of a
    # request that had already run would show here) and none was dropped.
    assert _answered(cluster) - before == 200
    per_replica = [answered(scrape(r.url(cluster.cfg.host) + "/metrics")) for r in cluster.replicas]
    assert all(n >= 40 for n in per_replica), per_replica  # round robin: every replica did its share


def test_a_killed_replica_loses_no_request_and_rejoins_after_restart(cluster):
    items = _items()
    chosen = [items[(7 * i) % len(items)] for i in range(60)]
    requests = [_request(i, item) for i, item in enumerate(chosen)]
    victim = cluster.replicas[1]
    victim_url = victim.url(cluster.cfg.host)
    old_pid = victim.process.pid
    marks = {}

    async def kill_under_load():
        await asyncio.sleep(3.0)  # requests are in flight on every replica by now
        cluster.kill_replica(1)
        marks["killed"] = time.monotonic()
        # the router sees it fail within interval x threshold (+ a check in flight)
        while _workers(cluster).get(victim_url, True):
            assert time.monotonic() - marks["killed"] < 15, "the router kept the dead replica healthy"
            await asyncio.sleep(0.2)
        marks["unhealthy"] = time.monotonic()

    results = asyncio.run(_send_all(cluster.url, requests, concurrency=24, on_started=kill_under_load))
    _check_valid(requests, results, chosen)  # every request answered: by another replica, or a client retry
    retried = sum(1 for _, _, tries in results if tries > 1)
    print(f"kill -9 under load: 60/60 answered; {retried} needed a client retry; router marked it unhealthy "
          f"{marks['unhealthy'] - marks['killed']:.1f} s after the kill")

    # The supervisor restarts it on the same ports; the router's health check brings it back.
    end = time.monotonic() + 120
    while not (victim.process.pid != old_pid and victim.ready.is_set() and _workers(cluster).get(victim_url)):
        assert time.monotonic() < end, "the killed replica did not come back"
        time.sleep(0.5)
    assert victim.restarts_total == 1
    # Healthy again, it gets traffic once the router's circuit breaker (opened by the failed connections, if
    # there were 10) lets a trial through: circuit_breaker_timeout_s (10 s) at most.
    back = time.monotonic()
    while answered(scrape(victim_url + "/metrics")) == 0:
        assert time.monotonic() - back < 60, "the restarted replica got no traffic"
        more = [_request(i, items[i % len(items)]) for i in range(3)]
        results = asyncio.run(_send_all(cluster.url, more, concurrency=3))
        _check_valid(more, results, [items[i % len(items)] for i in range(3)])
    print(f"the restarted replica answered again {time.monotonic() - back:.1f} s after it was healthy")


def test_the_command_prints_ready_routes_and_stops_everything_on_sigterm(tmp_path):
    """`structgen cluster` itself, one replica: its output names every port, it routes, SIGTERM ends it all."""
    import re
    import signal
    import socket
    import subprocess
    import sys

    pytest.importorskip("sglang_router")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "structgen.cli", "cluster", "--replicas", "1", "--port", str(port),
                             "--health-check-interval", "1", "--health-failure-threshold", "1", "--",
                             "--compile-workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out = []
        for line in proc.stdout:
            out.append(line)
            if line.strip() == "ready":
                break
        assert out and out[-1].strip() == "ready", out
        m = re.search(r"replica 0: gRPC 127\.0\.0\.1:(\d+), HTTP http://127\.0\.0\.1:(\d+)", "".join(out))
        assert m and f"on http://127.0.0.1:{port}" in "".join(out), out
        ports = [int(m.group(1)), int(m.group(2)), port]
        r = httpx.post(f"http://127.0.0.1:{port}/generate", timeout=120, json={
            "text": "The code is ", "sampling_params": {"max_new_tokens": 8, "temperature": 0, "regex": r"[A-Z]{3}"}})
        assert r.status_code == 200 and len(r.json()["text"]) == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "stopped" in proc.stdout.read()
        for p in ports:  # the replica and the router are gone: nothing listens on their ports any more
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", p), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
