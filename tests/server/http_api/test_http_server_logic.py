"""The HTTP server's own lifecycle over FakeEngine (tests/server/conftest.py): gRPC and HTTP on one engine and one
admission queue, drain on stop (503 then closed), a taken HTTP port failing before the engine starts, the queue
bound shared by both APIs."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

import structgen
from structgen import Client


@pytest.fixture(scope="module")
def tokenizer():
    return structgen.default_tokenizer()


def wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}


def test_both_apis_share_one_engine_and_one_queue(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer, step_s=0.05)
    st = serve_fake(engine, http_port=0, max_queue=1)
    url = st.http_url
    with Client(st.target, timeout=30) as c:
        done = {}
        t = threading.Thread(target=lambda: done.setdefault("grpc", c.generate("hi", max_tokens=40)))
        t.start()
        assert wait_until(lambda: len(engine.running) == 1)
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)  # the gRPC call holds the one slot
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"
        t.join(30)
    r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    assert len(engine.requests) == 2  # one engine saw both


def test_stop_drains_http_too(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer, step_s=0.1)
    st = serve_fake(engine, http_port=0)
    url = st.http_url
    results = {}

    def long_call():
        results["long"] = httpx.post(url + "/v1/chat/completions", json={**CHAT, "max_tokens": 5}, timeout=30)

    t = threading.Thread(target=long_call)
    t.start()
    assert wait_until(lambda: len(engine.running) == 1)
    stopper = threading.Thread(target=st.stop, kwargs=dict(drain_timeout_s=3.0))
    stopper.start()
    assert wait_until(lambda: st.server.admission.draining)
    r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 503 and "shutting down" in r.json()["error"]["message"]
    assert httpx.get(url + "/health", timeout=5).status_code == 503  # the router takes the replica out
    t.join(30)
    stopper.join(30)
    assert results["long"].status_code == 200  # in flight when the drain began: it finished
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=5)


def test_a_taken_http_port_fails_before_the_engine_starts(tokenizer, fake_engine_cls):
    from structgen.server.background import BackgroundServer
    from structgen.server.config import ServerConfig

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        engine = fake_engine_cls(tokenizer)
        with pytest.raises(OSError, match="could not bind HTTP"):
            BackgroundServer(engine, ServerConfig(port=0, http_port=taken.getsockname()[1])).start()
        assert not engine.started


def test_http_keys_are_the_grpc_keys(serve_fake, tokenizer, fake_engine_cls):
    st = serve_fake(fake_engine_cls(tokenizer), http_port=0, api_keys=frozenset({"k1"}))
    url = st.http_url + "/v1/completions"
    body = {"model": "m", "prompt": "hi", "max_tokens": 2}
    assert httpx.post(url, json=body).status_code == 401
    r = httpx.post(url, json=body, headers={"Authorization": "Basic k1"})
    assert r.status_code == 401 and "malformed" in r.json()["error"]["message"]
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer k1"}).status_code == 200
    with Client(st.target, api_key="k1", timeout=30) as c:
        assert c.generate("hi", max_tokens=2).text
    with Client(st.target, api_key="k2", timeout=30) as c, pytest.raises(structgen.Unauthenticated):
        c.generate("hi", max_tokens=2)


def test_drain_grace_turns_readiness_off_before_refusing(serve_fake, tokenizer, fake_engine_cls):
    """SIGTERM behind a load balancer: /health (what sglang-router checks) and /readiness go 503 at once while
    requests are still served for the grace; /liveness stays 200 throughout; then new requests are refused."""
    engine = fake_engine_cls(tokenizer, step_s=0.1)
    st = serve_fake(engine, http_port=0, drain_grace_s=1.5)
    url = st.http_url
    for path in ("/health", "/readiness", "/liveness"):
        assert httpx.get(url + path, timeout=5).status_code == 200, path
    results = {}
    long_call = threading.Thread(target=lambda: results.setdefault("long", httpx.post(
        url + "/v1/chat/completions", json={**CHAT, "max_tokens": 35}, timeout=30)))  # in flight past the grace
    long_call.start()
    assert wait_until(lambda: len(engine.running) == 1)
    stopper = threading.Thread(target=st.stop, kwargs=dict(drain_timeout_s=3.0))
    t0 = time.monotonic()
    stopper.start()
    assert wait_until(lambda: httpx.get(url + "/health", timeout=5).status_code == 503)
    assert httpx.get(url + "/readiness", timeout=5).status_code == 503
    assert httpx.get(url + "/health_generate", timeout=5).status_code == 503
    assert httpx.get(url + "/liveness", timeout=5).status_code == 200
    r = httpx.post(url + "/v1/chat/completions", json={**CHAT, "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, "still inside the grace: served"
    assert time.monotonic() - t0 < 1.5
    assert wait_until(lambda: st.server.admission.draining)
    assert time.monotonic() - t0 >= 1.4
    r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 503
    assert httpx.get(url + "/liveness", timeout=5).status_code == 200
    long_call.join(30)
    stopper.join(30)
    assert results["long"].status_code == 200
