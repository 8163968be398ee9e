"""`sglang-router` (the real Rust router, as SGLang deployments run it) accepts structgen as a worker unpatched:
it discovers it, health-checks it and routes SGLang's /generate and OpenAI's /v1/chat/completions to it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import httpx
import jsonschema
import pytest

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def router(http_url, real_api_key, tmp_path):
    pytest.importorskip("sglang_router")
    port = _free_port()
    log = open(tmp_path / "router.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", http_url,
                             "--host", "127.0.0.1", "--port", str(port), "--policy", "cache_aware",
                             "--api-key", real_api_key, "--log-level", "warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {real_api_key}"}
    try:
        end = time.monotonic() + 60
        while True:  # ready once it routes a request to the worker
            try:
                if httpx.get(url + "/v1/models", headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"sglang-router did not come up: {(tmp_path / 'router.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url, headers
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.slow
def test_the_router_routes_generate_and_chat_to_structgen(router):
    url, headers = router
    r = httpx.post(url + "/generate", headers=headers, timeout=120, json={
        "text": "The office phone number is ", "sampling_params": {
            "max_new_tokens": 12, "temperature": 0, "regex": r"\d{3}-\d{4}"}})
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"\d{3}-\d{4}", r.json()["text"])
    r = httpx.post(url + "/v1/chat/completions", headers=headers, timeout=120, json={
        "model": "SmolLM2-135M-Instruct", "temperature": 0, "max_tokens": 60,
        "messages": [{"role": "user", "content": "Invent a person as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}})
    assert r.status_code == 200, r.text
    jsonschema.Draft202012Validator(PERSON).validate(json.loads(r.json()["choices"][0]["message"]["content"]))


def test_the_router_reads_the_load_structgen_reports(serve_fake, fake_engine_cls):
    """/get_load in SGLang's shape (a list, one entry per rank, `num_tokens`): the router's /get_loads (and its
    power_of_two policy) read a real number from it, not the -1 it shows for a worker without one."""
    pytest.importorskip("sglang_router")
    import structgen

    st = serve_fake(fake_engine_cls(structgen.default_tokenizer()), http_port=0)
    body = httpx.get(st.http_url + "/get_load", timeout=5).json()
    assert body == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", st.http_url,
                             "--host", "127.0.0.1", "--port", str(port), "--policy", "round_robin",
                             "--prometheus-port", str(_free_port()), "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                loads = httpx.get(f"http://127.0.0.1:{port}/get_loads", timeout=5).json()["workers"]
                if loads:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert proc.poll() is None and time.monotonic() < end, "the router did not register the worker"
            time.sleep(0.3)
        assert loads == [{"worker": st.http_url, "load": 0}]
    finally:
        proc.terminate()
        proc.wait(10)
