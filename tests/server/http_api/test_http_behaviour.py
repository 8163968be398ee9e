"""What HTTP clients get from the real server whatever the client library: SGLang's /generate, limits and
back-pressure, disconnects, error shapes, auth, metrics."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import jsonschema
import pytest

from http_helpers import load, wait_idle

FLAG = {"type": "object", "properties": {"even": {"type": "boolean"}}, "required": ["even"],
        "additionalProperties": False}
LONG = "[a-z ]{1000}"  # an output that cannot end early: the work outlasts the test's clock


@pytest.fixture
def auth(real_api_key) -> dict:
    return {"Authorization": f"Bearer {real_api_key}"}


# ---- SGLang's /generate ----------------------------------------------------------------------------------

def test_generate_with_a_regex_and_a_json_schema(http_url, auth):
    r = httpx.post(http_url + "/generate", headers=auth, timeout=120, json={
        "text": "The office phone number is ", "sampling_params": {
            "max_new_tokens": 12, "temperature": 0, "regex": r"\d{3}-\d{4}"}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert re.fullmatch(r"\d{3}-\d{4}", out["text"])
    meta = out["meta_info"]
    assert meta["finish_reason"]["type"] == "stop"
    assert meta["completion_tokens"] == len(out["output_ids"]) > 0 and meta["prompt_tokens"] > 0
    r = httpx.post(http_url + "/generate", headers=auth, timeout=120, json={
        "text": "Is 4 even? Answer in JSON: ", "sampling_params": {
            "max_new_tokens": 16, "temperature": 0, "json_schema": json.dumps(FLAG)}})
    jsonschema.Draft202012Validator(FLAG).validate(json.loads(r.json()["text"]))


def test_generate_batches_and_input_ids(http_url, auth, real_server):
    tok = real_server.server.engine.tokenizer
    r = httpx.post(http_url + "/generate", headers=auth, timeout=120, json={
        "text": ["Colour: ", "Animal: "], "sampling_params": {"max_new_tokens": 3, "temperature": 0,
                                                               "regex": "(red|cat)"}})
    assert [x["text"] for x in r.json()] and all(x["text"] in ("red", "cat") for x in r.json())
    ids = tok.encode("The sky is")
    by_ids = httpx.post(http_url + "/generate", headers=auth, timeout=120, json={
        "input_ids": ids, "sampling_params": {"max_new_tokens": 4, "temperature": 0}}).json()
    by_text = httpx.post(http_url + "/generate", headers=auth, timeout=120, json={
        "text": "The sky is", "sampling_params": {"max_new_tokens": 4, "temperature": 0}}).json()
    assert by_ids["output_ids"] == by_text["output_ids"]


def test_generate_streams_cumulative_text_then_done(http_url, auth):
    body = {"text": "Is 3 even? Answer in JSON: ", "sampling_params": {
        "max_new_tokens": 16, "temperature": 0, "json_schema": json.dumps(FLAG)}}
    unary = httpx.post(http_url + "/generate", headers=auth, timeout=120, json=body).json()
    texts, done = [], False
    with httpx.stream("POST", http_url + "/generate", headers=auth, timeout=120, json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            if line == "data: [DONE]":
                done = True
                break
            texts.append(json.loads(line[5:])["text"])
    assert done and texts[-1] == unary["text"]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # cumulative, as SGLang's frontend reads it


def test_prompt_logprobs_for_select(http_url, auth, real_server):
    """`max_new_tokens: 0` + `return_logprob` + `logprob_start_len`: the prompt tokens' logprobs, as sgl.select
    scores its choices (first entry of a prompt scored from 0 has no logprob)."""
    tok = real_server.server.engine.tokenizer
    text = "The capital of France is Paris"
    r = httpx.post(http_url + "/generate", headers=auth, timeout=120, json={
        "text": text, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": 0,
        "return_text_in_logprobs": True})
    assert r.status_code == 200, r.text
    out = r.json()
    lps = out["meta_info"]["input_token_logprobs"]
    ids = tok.encode(text)
    assert [e[1] for e in lps[1:]] == ids[1:] and lps[0][0] is None
    assert all(e[0] <= 0 for e in lps[1:])
    assert out["text"] == "" and out["meta_info"]["completion_tokens"] == 0
    # Scored from position 3: the same values for the same positions.
    tail = httpx.post(http_url + "/generate", headers=auth, timeout=120, json={
        "text": text, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True,
        "logprob_start_len": 3}).json()["meta_info"]["input_token_logprobs"]
    assert [e[1] for e in tail] == ids[3:]
    assert [e[0] for e in tail] == pytest.approx([e[0] for e in lps[3:]], abs=1e-4)


def test_info_health_and_flush(http_url, auth):
    info = httpx.get(http_url + "/get_model_info", headers=auth).json()
    assert info["model_path"] == "SmolLM2-135M-Instruct" and info["is_generation"] is True
    server = httpx.get(http_url + "/get_server_info", headers=auth).json()
    assert server["context_length"] > 0 and "load" in server["internal_states"][0]
    assert httpx.get(http_url + "/health").status_code == 200  # open: load balancers carry no key
    assert httpx.get(http_url + "/health_generate", timeout=60).status_code == 200
    wait_idle(http_url, auth["Authorization"].split()[1])
    r = httpx.post(http_url + "/flush_cache", headers=auth)
    assert r.status_code == 200
    assert load(http_url, auth["Authorization"].split()[1])["kv_blocks_cached"] == 0


def test_sglang_errors_have_sglangs_shape(http_url, auth):
    r = httpx.post(http_url + "/generate", headers=auth, json={"text": "x", "sampling_params": {"regex": "[0-9"}})
    assert r.status_code == 400
    assert "regex" in r.json()["error"]["message"] or "position" in r.json()["error"]["message"]
    r = httpx.post(http_url + "/generate", headers=auth, json={"sampling_params": {}})
    assert r.status_code == 400 and "text or input_ids" in r.json()["error"]["message"]
    assert httpx.post(http_url + "/generate", json={"text": "x"}).status_code == 401


# ---- HTTP limits and errors -------------------------------------------------------------------------------

def test_malformed_and_oversized_bodies(http_url, auth, real_server):
    url = http_url + "/v1/chat/completions"
    r = httpx.post(url, headers={**auth, "Content-Type": "application/json"}, content=b'{"model": ')
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    limit = real_server.server.config.max_request_bytes
    r = httpx.post(url, headers=auth, json={"model": "m", "messages": [{"role": "user", "content": "x" * limit}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(http_url + "/v1/nope", headers=auth)
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.post(url, json={"model": "m", "messages": []})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.slow
def test_200_concurrent_requests_against_a_queue_of_50_lose_none(http_url, auth, real_server):
    key = auth["Authorization"].split()[1]
    wait_idle(http_url, key)
    body = lambda i: {"model": "m", "max_tokens": 8, "temperature": 0,  # noqa: E731
                      "messages": [{"role": "user", "content": f"Request {i}: is {i} even? Answer in JSON."}],
                      "response_format": {"type": "json_schema", "json_schema": {"name": "f", "schema": FLAG}}}
    httpx.post(http_url + "/v1/chat/completions", headers=auth, json=body(0), timeout=120)  # compile once

    async def main():
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(timeout=600, limits=limits) as c:
            return await asyncio.gather(*(c.post(http_url + "/v1/chat/completions", headers=auth, json=body(i))
                                          for i in range(200)))

    responses = asyncio.run(main())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, set(codes)
    assert codes.count(429) > 0 and codes.count(200) >= 50
    for r in responses:
        if r.status_code == 200:
            jsonschema.Draft202012Validator(FLAG).validate(json.loads(r.json()["choices"][0]["message"]["content"]))
        else:
            assert r.headers["retry-after"] and "queue is full" in r.json()["error"]["message"]
            assert r.json()["error"]["type"] == "rate_limit_error"
    wait_idle(http_url, key)


def test_a_client_that_disconnects_mid_stream_frees_its_kv(http_url, auth):
    key = auth["Authorization"].split()[1]
    wait_idle(http_url, key)
    body = {"model": "m", "max_tokens": 500, "stream": True, "extra": None,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
            "structured_outputs": {"regex": LONG}}
    with httpx.stream("POST", http_url + "/v1/chat/completions", headers=auth, json=body, timeout=120) as r:
        lines = r.iter_lines()
        got = [line for line, _ in zip(lines, range(6)) if line.startswith("data:")]
        assert len(got) >= 2
        busy = load(http_url, key)
        assert busy["running"] == 1 and busy["kv_blocks_used"] - busy["kv_blocks_cached"] > 0
    wait_idle(http_url, key, timeout=30)  # closing the connection cancelled the request and freed its KV


def test_a_unary_client_that_goes_away_frees_its_kv(http_url, auth):
    key = auth["Authorization"].split()[1]
    wait_idle(http_url, key)
    body = {"model": "m", "max_tokens": 500, "messages": [{"role": "user", "content": "Write a long story."}],
            "guided_regex": LONG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(http_url + "/v1/chat/completions", headers=auth, json=body, timeout=2.0)
    wait_idle(http_url, key, timeout=30)


def test_the_request_timeout_header_is_a_deadline(http_url, auth):
    key = auth["Authorization"].split()[1]
    t0 = time.monotonic()
    r = httpx.post(http_url + "/v1/chat/completions", headers={**auth, "X-Request-Timeout": "1"}, timeout=60,
                   json={"model": "m", "max_tokens": 500, "guided_regex": LONG,
                         "messages": [{"role": "user", "content": "Write a long story."}]})
    assert r.status_code == 408 and "deadline" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 10
    wait_idle(http_url, key, timeout=30)


def test_http_calls_count_in_the_metrics(http_url, auth):
    httpx.post(http_url + "/v1/completions", headers=auth, timeout=60,
               json={"model": "m", "prompt": "Hi", "max_tokens": 2})
    text = httpx.get(http_url + "/metrics").text
    assert re.search(r'structgen_requests_total\{method="http:/v1/completions",status="OK"\} [1-9]', text)
