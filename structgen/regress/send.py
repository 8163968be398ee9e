"""Sending a golden case to a real server, over gRPC (the SDK's wire code) or HTTP (the OpenAI-compatible API),
and asking the server what it serves (its fingerprint).

Cases go out the way a user's code would send them:
- `text`: the SDK's `extract` request byte for byte (its prompt, schema constraint and sampling defaults, as
  `bench.extraction.one_request` sends it); over HTTP the same chat messages and defaults to
  /v1/chat/completions with `response_format` json_schema.
- `messages`: chat through the server's chat template (gRPC `messages`, HTTP /v1/chat/completions).
- `prompt`: raw completion (gRPC `prompt`, HTTP /v1/completions).
The constraint is the case's schema / regex / choices (HTTP: vLLM's `structured_outputs` spelling, which
structgen's HTTP API takes for all three).

A sender never raises for one case's failure: it returns a failed CaseResult with the status. It raises
`ServerUnreachable` when the server is gone (connection refused, UNAVAILABLE), so the runner stops and a rerun
resumes those cases instead of recording them as the candidate's errors.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from .golden import GoldenCase
from .outcome import CaseResult, failed_case, score_case


def _reraise_if_interrupted(e: Exception) -> None:
    """Cancellation (Ctrl-C: asyncio.run cancels the run) as cancellation, not as this case's result.

    NOTE: grpc.aio turns a cancelled call into an AioRpcError (CANCELLED), an Exception: caught as a case's error, the
    interruption was swallowed, the run went on, and the case was recorded as failed, so a resume skipped it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from e


class ServerUnreachable(ConnectionError):
    """The server cannot be reached (or is shutting down): stop the run, keep what is recorded."""


@dataclass(frozen=True)
class Sampling:
    """The sampling every case is sent with (recorded in the fingerprint). `text` cases add the SDK's extract
    defaults (EXTRACT_SAMPLING_DEFAULTS) under these, exactly as `extract` does."""

    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 512
    timeout_s: float = 300.0

    def request_kwargs(self) -> dict:
        return {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens}


def _constraint_kwargs(case: GoldenCase) -> dict:
    return {{"schema": "json_schema", "regex": "regex", "choices": "choices"}[case.constraint_kind]: case.constraint}


# ------------------------------------------------------------------------------------------ gRPC
class GrpcSender:
    """Cases through the SDK's AsyncClient (a real gRPC channel)."""

    api = "grpc"

    def __init__(self, target: str, api_key: str | None, sampling: Sampling):
        from structgen import AsyncClient

        self.target = target
        self.sampling = sampling
        self.client = AsyncClient(target, api_key=api_key)

    async def close(self):
        await self.client.close()

    async def server_info(self) -> dict:
        """What GetServerInfo tells, as the fingerprint's fields."""
        if not await self.client.health(timeout=10):
            raise ServerUnreachable(f"no healthy structgen server at {self.target}")
        info = await self.client.server_info(timeout=60)
        return {"model": info.model, "weights_hash": info.weights_hash, "tokenizer_fingerprint":
                info.tokenizer_fingerprint, "dtype": info.dtype, "device": info.device, "structgen_version":
                info.version, "engine_config": json.loads(info.engine_config_json or "{}")}

    async def send(self, case: GoldenCase) -> CaseResult:
        from structgen.client import wire
        from structgen.client.extraction import ExtractionTask

        s = self.sampling
        t0 = time.perf_counter()
        try:
            if case.input_kind == "text":
                call = wire.extract_call(ExtractionTask.of(case.constraint), case.input, **s.request_kwargs())
            elif case.input_kind == "messages":
                call = wire.generate_call(messages=case.input, **_constraint_kwargs(case), **s.request_kwargs())
            else:
                call = wire.generate_call(case.input, **_constraint_kwargs(case), **s.request_kwargs())
            # NOTE: the raw response, not the call's parse: extract's parsed value has no finish reason or text
            response = await self.client._unary(wire.Call(call.rpc, call.request, lambda r: r),
                                                self.client._deadline(s.timeout_s))
        except Exception as e:  # a typed SDK error or a broken connection
            _reraise_if_interrupted(e)
            status = getattr(getattr(e, "code", None), "name", None) or type(e).__name__
            if status == "UNAVAILABLE":
                raise ServerUnreachable(f"{self.target}: {e}") from e
            return failed_case(case, status, time.perf_counter() - t0, f"{type(e).__name__}: {e}")
        latency = time.perf_counter() - t0
        done = wire.completion(response)
        return score_case(case, done.text, done.finish_reason or "unspecified", latency_s=latency,
                          prompt_tokens=done.usage.prompt_tokens, output_tokens=done.usage.completion_tokens)


# ------------------------------------------------------------------------------------------ HTTP
class HttpSender:
    """Cases through the OpenAI-compatible HTTP API (plain httpx: the body is exactly what we write here)."""

    api = "http"

    def __init__(self, base_url: str, api_key: str | None, sampling: Sampling):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.sampling = sampling
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=sampling.timeout_s)

    async def close(self):
        await self.client.aclose()

    async def _get(self, path: str) -> dict:
        import httpx

        try:
            r = await self.client.get(path, timeout=60)
        except httpx.TransportError as e:
            raise ServerUnreachable(f"{self.base_url}: {e}") from e
        if r.status_code != 200:
            raise ServerUnreachable(f"{self.base_url}{path} answered HTTP {r.status_code}: {r.text[:200]}")
        return r.json()

    async def server_info(self) -> dict:
        info = await self._get("/get_server_info")
        return {"model": info.get("model_path", ""), "weights_hash": info.get("weights_hash", ""),
                "tokenizer_fingerprint": info.get("tokenizer_fingerprint", ""), "dtype": info.get("dtype", ""),
                "device": str(info.get("engine_config", {}).get("device", "")),
                "structgen_version": info.get("version", ""), "engine_config": info.get("engine_config", {})}

    def _body(self, case: GoldenCase) -> tuple[str, dict]:
        from structgen.client.extraction import EXTRACT_SAMPLING_DEFAULTS, ExtractionTask

        s = self.sampling
        body: dict = {"model": "any", "temperature": s.temperature, "seed": s.seed, "max_tokens": s.max_tokens}
        if case.input_kind == "text":
            task = ExtractionTask.of(case.constraint)
            body.update(EXTRACT_SAMPLING_DEFAULTS)   # what extract adds under the caller's sampling
            body["messages"] = task.messages(case.input)
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "extract",
                                                                             "schema": task.schema}}
            return "/v1/chat/completions", body
        key = {"schema": "json", "regex": "regex", "choices": "choice"}[case.constraint_kind]
        body["structured_outputs"] = {key: case.constraint}
        if case.input_kind == "messages":
            body["messages"] = case.input
            return "/v1/chat/completions", body
        body["prompt"] = case.input
        return "/v1/completions", body

    async def send(self, case: GoldenCase) -> CaseResult:
        import httpx

        path, body = self._body(case)
        t0 = time.perf_counter()
        try:
            r = await self.client.post(path, json=body)
        except httpx.TimeoutException as e:
            return failed_case(case, "DEADLINE_EXCEEDED", time.perf_counter() - t0, f"{type(e).__name__}: {e}")
        except httpx.TransportError as e:
            raise ServerUnreachable(f"{self.base_url}: {e}") from e
        latency = time.perf_counter() - t0
        if r.status_code == 503:
            raise ServerUnreachable(f"{self.base_url}{path} answered 503: {r.text[:200]}")
        if r.status_code != 200:
            return failed_case(case, f"HTTP_{r.status_code}", latency, r.text[:500])
        doc = r.json()
        choice = doc["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        usage = doc.get("usage") or {}
        return score_case(case, text or "", choice.get("finish_reason") or "unspecified", latency_s=latency,
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          output_tokens=int(usage.get("completion_tokens", 0)))


def sender_for(server: str, api_key: str | None, sampling: Sampling):
    """`http://HOST:PORT` (or https) -> HttpSender, `HOST:PORT` -> GrpcSender."""
    if server.startswith(("http://", "https://")):
        return HttpSender(server, api_key, sampling)
    return GrpcSender(server, api_key, sampling)
