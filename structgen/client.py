"""Python SDK: `Client` (blocking) and `AsyncClient` (asyncio) for a structgen server.

    client = structgen.Client("localhost:50051")
    invoice = client.extract(text, Invoice)                       # a validated pydantic instance
    for r in client.extract_many(texts, Invoice): print(r.value)  # in input order, with a progress bar

Failed calls raise the typed errors of structgen.client_errors (InvalidConstraint, Overloaded, ...).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Iterator

import grpc

from ._proto import structgen_pb2 as pb
from ._proto import structgen_pb2_grpc as pb_grpc
from .client_errors import Overloaded, RemoteError, Unavailable, from_rpc_error
from .extraction import DEFAULT_EXTRACT_MAX_TOKENS, ExtractionTask

_FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}
# Batch extraction retries transient refusals (shutting down / queue full) with exponential backoff + jitter.
_RETRYABLE = (Unavailable, Overloaded)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    forced_tokens: int


@dataclass(frozen=True)
class Timings:
    queued_s: float
    ttft_s: float
    total_s: float


@dataclass(frozen=True)
class Completion:
    """A whole generation."""

    request_id: str
    text: str
    finish_reason: str | None  # "stop" | "length"
    usage: Usage
    timings: Timings


@dataclass(frozen=True)
class Delta:
    """One streamed piece; `finish_reason`, `usage` and `timings` are set on the last one only."""

    request_id: str
    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: Timings | None = None


@dataclass(frozen=True)
class Compiled:
    """A constraint compiled on the server: pass `id` as `compiled_id=` in later calls."""

    id: str
    num_states: int
    compile_time_s: float
    cached: bool


@dataclass(frozen=True)
class ExtractResult:
    """One item of `extract_many`: `value` when it worked, `error` (an exception) when it did not."""

    index: int
    value: Any = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _usage(u: pb.Usage) -> Usage:
    return Usage(u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.forced_tokens)


def _timings(t: pb.Timings) -> Timings:
    return Timings(t.queued_s, t.ttft_s, t.total_s)


def _constraint(json_schema=None, regex=None, choices=None, compiled_id=None,
                allow_extra_properties=False) -> pb.Constraint | None:
    given = [n for n, v in (("json_schema", json_schema), ("regex", regex), ("choices", choices),
                            ("compiled_id", compiled_id)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one constraint, got {', '.join(given)}")
    if json_schema is not None:
        text = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
        return pb.Constraint(json_schema=text, json_schema_options=pb.JsonSchemaOptions(
            allow_extra_properties=allow_extra_properties))
    if regex is not None:
        return pb.Constraint(regex=regex)
    if choices is not None:
        if isinstance(choices, str):
            raise TypeError("choices must be a list of strings, not one string")
        return pb.Constraint(choice=pb.ChoiceList(choices=list(choices)))
    if compiled_id is not None:
        return pb.Constraint(compiled_id=compiled_id)
    return None


def build_request(prompt: str | None = None, *, messages: list[dict] | None = None, system: str | None = None,
                  json_schema: dict | str | None = None, regex: str | None = None, choices: list[str] | None = None,
                  compiled_id: str | None = None, allow_extra_properties: bool = False,
                  max_tokens: int | None = None, temperature: float = 0.0, top_p: float | None = None,
                  top_k: int | None = None, seed: int | None = None, stop: Iterable[str] = (),
                  request_id: str | None = None, speculation: bool | None = None) -> pb.GenerateRequest:
    """The GenerateRequest for these arguments (shared by Client and AsyncClient)."""
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt (raw text) or messages (chat turns)")
    if isinstance(stop, str):
        stop = [stop]
    req = pb.GenerateRequest(
        prompt=prompt or "", system=system or "", stop=list(stop), request_id=request_id or "",
        sampling=pb.SamplingParams(temperature=temperature, top_p=top_p or 0.0, top_k=top_k or 0),
    )
    for m in messages or ():
        req.messages.add(role=m["role"], content=m["content"])
    if seed is not None:
        req.sampling.seed = seed
    if max_tokens is not None:
        req.max_tokens = max_tokens
    if speculation is not None:
        req.speculation = speculation
    c = _constraint(json_schema, regex, choices, compiled_id, allow_extra_properties)
    if c is not None:
        req.constraint.CopyFrom(c)
    return req


def _completion(r: pb.GenerateResponse) -> Completion:
    return Completion(r.request_id, r.text, _FINISH.get(r.finish_reason), _usage(r.usage), _timings(r.timings))


def _delta(r: pb.GenerateStreamResponse) -> Delta:
    if r.finish_reason == pb.FINISH_REASON_UNSPECIFIED:
        return Delta(r.request_id, r.text)
    return Delta(r.request_id, r.text, _FINISH.get(r.finish_reason), _usage(r.usage), _timings(r.timings))


def _extract_request(task: ExtractionTask, text: str, max_tokens: int | None) -> pb.GenerateRequest:
    return build_request(messages=task.messages(text), json_schema=task.schema,
                         max_tokens=max_tokens or DEFAULT_EXTRACT_MAX_TOKENS)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", disable=not (enabled and sys.stderr.isatty()))


def _backoff(attempt: int) -> float:
    return min(8.0, 0.25 * 2 ** attempt) * (0.5 + random.random())


def _channel_options(max_message_bytes: int) -> list:
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)]


class Client:
    """Blocking client. `timeout` (seconds) is the default deadline of every call; thread-safe.

    `target` is "host:port". `api_key` is sent as `authorization: Bearer KEY`. Pass `credentials`
    (grpc.ssl_channel_credentials()) for TLS.
    """

    def __init__(self, target: str, api_key: str | None = None, timeout: float | None = None, *,
                 credentials: grpc.ChannelCredentials | None = None, max_message_bytes: int = 16 << 20):
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        options = _channel_options(max_message_bytes)
        self._channel = (grpc.secure_channel(target, credentials, options) if credentials
                         else grpc.insecure_channel(target, options))
        self._stub = pb_grpc.StructGenStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, timeout):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def generate(self, prompt: str | None = None, *, timeout: float | None = None, **kwargs) -> Completion:
        """One completion. kwargs: messages, system, json_schema | regex | choices | compiled_id, max_tokens,
        temperature, top_p, top_k, seed, stop, request_id (see `build_request`)."""
        return _completion(self._call(self._stub.Generate, build_request(prompt, **kwargs), timeout))

    def stream(self, prompt: str | None = None, *, timeout: float | None = None, **kwargs) -> Iterator[Delta]:
        """Text deltas as they are generated; closing the iterator early cancels the request on the server."""
        call = self._stub.GenerateStream(build_request(prompt, **kwargs), metadata=self._metadata,
                                         timeout=self.timeout if timeout is None else timeout)
        try:
            for r in call:
                yield _delta(r)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()  # no-op once finished; frees the server's work when the caller stops early

    def compile(self, *, json_schema=None, regex=None, choices=None, allow_extra_properties=False,
                timeout: float | None = None) -> Compiled:
        c = _constraint(json_schema, regex, choices, None, allow_extra_properties)
        if c is None:
            raise ValueError("give one of json_schema, regex or choices")
        r = self._call(self._stub.Compile, pb.CompileRequest(constraint=c), timeout)
        return Compiled(r.id, r.num_states, r.compile_time_s, r.cached)

    def server_info(self, timeout: float | None = None) -> pb.ServerInfo:
        """Model, tokenizer, limits and current load (a structgen.v1.ServerInfo message)."""
        return self._call(self._stub.GetServerInfo, pb.GetServerInfoRequest(), timeout)

    def health(self, service: str = "", timeout: float | None = 5.0) -> bool:
        """True if the server reports SERVING (the standard grpc.health.v1 check; needs no API key)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND,
                            grpc.StatusCode.DEADLINE_EXCEEDED):
                return False
            raise from_rpc_error(e) from None
        return r.status == health_pb2.HealthCheckResponse.SERVING

    def extract(self, text: str, schema, instructions: str | None = None, *, max_tokens: int | None = None,
                timeout: float | None = None):
        """Extract `schema` (pydantic model class or JSON Schema dict) from `text`: a validated model
        instance, or the JSON value for a dict schema."""
        task = ExtractionTask.of(schema, instructions)
        return self._extract(task, text, max_tokens, timeout)

    def _extract(self, task: ExtractionTask, text: str, max_tokens, timeout):
        r = _completion(self._call(self._stub.Generate, _extract_request(task, text, max_tokens), timeout))
        return task.parse(r.text, r.finish_reason)

    def extract_many(self, texts: Iterable[str], schema, *, concurrency: int = 16, progress: bool = True,
                     instructions: str | None = None, max_tokens: int | None = None, retries: int = 5,
                     timeout: float | None = None) -> Iterator[ExtractResult]:
        """Extract from many documents, `concurrency` at a time; yields one ExtractResult per text, in input
        order. A failed item is reported in its result and never stops the batch; UNAVAILABLE and
        RESOURCE_EXHAUSTED are retried up to `retries` times with backoff."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        task = ExtractionTask.of(schema, instructions)
        texts = list(texts)

        def one(i: int) -> ExtractResult:
            for attempt in range(retries + 1):
                try:
                    return ExtractResult(i, value=self._extract(task, texts[i], max_tokens, timeout))
                except _RETRYABLE as e:
                    if attempt == retries:
                        return ExtractResult(i, error=e)
                    time.sleep(_backoff(attempt))
                except Exception as e:  # per-item: report it, keep the batch going
                    return ExtractResult(i, error=e)
            raise AssertionError("unreachable")  # pragma: no cover

        with ThreadPoolExecutor(max_workers=concurrency) as pool, _progress(len(texts), progress) as bar:
            futures = [pool.submit(one, i) for i in range(len(texts))]
            for f in futures:
                f.add_done_callback(lambda _f: bar.update(1))  # progress as items finish, not in order
            for f in futures:
                yield f.result()


class AsyncClient:
    """asyncio client (grpc.aio); same methods as Client, as coroutines / async iterators."""

    def __init__(self, target: str, api_key: str | None = None, timeout: float | None = None, *,
                 credentials: grpc.ChannelCredentials | None = None, max_message_bytes: int = 16 << 20):
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        options = _channel_options(max_message_bytes)
        self._channel = (grpc.aio.secure_channel(target, credentials, options) if credentials
                         else grpc.aio.insecure_channel(target, options))
        self._stub = pb_grpc.StructGenStub(self._channel)

    async def close(self):
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _call(self, method, request, timeout):
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout,
                                metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def generate(self, prompt: str | None = None, *, timeout: float | None = None, **kwargs) -> Completion:
        return _completion(await self._call(self._stub.Generate, build_request(prompt, **kwargs), timeout))

    async def stream(self, prompt: str | None = None, *, timeout: float | None = None,
                     **kwargs) -> AsyncIterator[Delta]:
        call = self._stub.GenerateStream(build_request(prompt, **kwargs), metadata=self._metadata,
                                         timeout=self.timeout if timeout is None else timeout)
        try:
            async for r in call:
                yield _delta(r)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    async def compile(self, *, json_schema=None, regex=None, choices=None, allow_extra_properties=False,
                      timeout: float | None = None) -> Compiled:
        c = _constraint(json_schema, regex, choices, None, allow_extra_properties)
        if c is None:
            raise ValueError("give one of json_schema, regex or choices")
        r = await self._call(self._stub.Compile, pb.CompileRequest(constraint=c), timeout)
        return Compiled(r.id, r.num_states, r.compile_time_s, r.cached)

    async def server_info(self, timeout: float | None = None) -> pb.ServerInfo:
        return await self._call(self._stub.GetServerInfo, pb.GetServerInfoRequest(), timeout)

    async def health(self, service: str = "", timeout: float | None = 5.0) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            r = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND,
                            grpc.StatusCode.DEADLINE_EXCEEDED):
                return False
            raise from_rpc_error(e) from None
        return r.status == health_pb2.HealthCheckResponse.SERVING

    async def extract(self, text: str, schema, instructions: str | None = None, *, max_tokens: int | None = None,
                      timeout: float | None = None):
        return await self._extract(ExtractionTask.of(schema, instructions), text, max_tokens, timeout)

    async def _extract(self, task: ExtractionTask, text: str, max_tokens, timeout):
        r = _completion(await self._call(self._stub.Generate, _extract_request(task, text, max_tokens), timeout))
        return task.parse(r.text, r.finish_reason)

    async def extract_many(self, texts: Iterable[str], schema, *, concurrency: int = 16, progress: bool = True,
                           instructions: str | None = None, max_tokens: int | None = None, retries: int = 5,
                           timeout: float | None = None) -> AsyncIterator[ExtractResult]:
        """As Client.extract_many, as an async iterator (results in input order)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        task = ExtractionTask.of(schema, instructions)
        texts = list(texts)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> ExtractResult:
            async with gate:
                for attempt in range(retries + 1):
                    try:
                        return ExtractResult(i, value=await self._extract(task, texts[i], max_tokens, timeout))
                    except _RETRYABLE as e:
                        if attempt == retries:
                            return ExtractResult(i, error=e)
                        await asyncio.sleep(_backoff(attempt))
                    except Exception as e:
                        return ExtractResult(i, error=e)
            raise AssertionError("unreachable")  # pragma: no cover

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(texts))]
        try:
            with _progress(len(texts), progress) as bar:
                for t in tasks:
                    t.add_done_callback(lambda _t: bar.update(1))
                for t in tasks:
                    yield await t
        finally:
            for t in tasks:
                t.cancel()


__all__ = ["Client", "AsyncClient", "Completion", "Delta", "Compiled", "ExtractResult", "Usage", "Timings",
           "RemoteError", "build_request"]
