"""One HTTP generation call on the GenerationCore: the body under the size limit, the API key, the deadline, the
admission ticket, the constraint compiled and checked against the budget, the engine requests, and the client
going away (the call is cancelled, so its engine requests are aborted and their KV freed)."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid

import anyio
import grpc
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request

from ...engine.requests import GenerateRequest
from ..auth import bearer_refusal, client_id
from ..generation import CallRecord, GenerationCore, deadline_after
from ..wire import RequestError, invalid
from .errors import HttpRefusal

# How often a unary call checks that its client is still there.
DISCONNECT_POLL_S = 0.2
# Clients may bound a call's time with this header (seconds), as gRPC clients do with a deadline.
TIMEOUT_HEADER = "x-request-timeout"


async def read_json(request: Request, limit: int):
    """The body as JSON; 413 past `limit` bytes (checked while reading, so a huge body is never held whole)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpRefusal(413, f"the request body is {declared} bytes; this server accepts at most {limit}",
                          "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpRefusal(413, f"the request body is over {limit} bytes, the most this server accepts",
                              "request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise invalid("the request has no body: send a JSON object")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise invalid("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise invalid(f"the request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise invalid("the request body nests too deep to read") from None


def authorize(request: Request, keys: frozenset[str]) -> None:
    """The same API keys as gRPC, as `Authorization: Bearer KEY`; nothing to check when the server has none."""
    if not keys:
        return
    why = bearer_refusal(request.headers.get("authorization"), tuple(k.encode() for k in keys),
                         missing="missing API key: send 'Authorization: Bearer <key>'",
                         malformed="malformed Authorization header: expected 'Bearer <key>'")
    if why is not None:
        raise RequestError(grpc.StatusCode.UNAUTHENTICATED, why)


def client_of(request: Request) -> str:
    """Who a call is from, for per-client bounds in the compile pool (auth.client_id)."""
    client = request.client
    return client_id(request.headers.get("authorization"), f"{client.host}:{client.port}" if client else "unknown")


def timeout_of(request: Request) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise invalid(f"the {TIMEOUT_HEADER} header must be a positive number of seconds, got {raw[:40]!r}")
    return value


class Call:
    """One admitted call. Use as `async with Call(...) as call:`; the exit releases the admission ticket and writes
    the call's metrics and log line, whatever ended it."""

    def __init__(self, core: GenerationCore, method: str, request: Request, request_id: str | None = None):
        self.core = core
        self.request = request
        self.rec = CallRecord(method, request_id or uuid.uuid4().hex)
        self.timeout_s = timeout_of(request)
        self.deadline = deadline_after(self.timeout_s)
        self.ticket = None

    async def __aenter__(self) -> "Call":
        self.ticket = self.core.admission.admit(uuid.uuid4().hex)  # the engine's id: unique whatever the client sends
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if isinstance(exc, RequestError):
            self.rec.status, self.rec.message = exc.code.name, exc.message
        elif isinstance(exc, asyncio.CancelledError):
            self.rec.status = "CANCELLED"  # the client went away; the engine requests were already aborted
        elif exc is not None:
            self.rec.status, self.rec.message = "INTERNAL", repr(exc)
        self.core.admission.release(self.ticket)
        self.core.finish(self.rec)
        return False

    @property
    def engine_id(self) -> str:
        return self.ticket.engine_id

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    async def constraint(self, spec, *, max_tokens: int, room: int):
        """The compiled constraint of `spec` (None: free text), refused when it cannot finish in the budget."""
        if spec is None:
            return None
        compiled, _ = await self.core.compile(spec, deadline=self.deadline, client=client_of(self.request))
        await self.core.check_budget(compiled, max_tokens, room)
        return compiled

    def engine_requests(self, prompt_ids: list[int], sampling, constraint, *, suffix: str = "", **extra) -> list:
        """One engine request per choice of `sampling.n` (ids `engine_id`, `engine_id#1`, ...)."""
        base = self.engine_id + suffix
        return [GenerateRequest(request_id=base if i == 0 else f"{base}#{i}", prompt_token_ids=prompt_ids,
                                sampling=s, constraint=constraint, **extra)
                for i, s in enumerate(self.core.choices(sampling))]

    async def run(self, engine_requests: list, on_output, rec: CallRecord | None = None):
        await self.core.run(engine_requests, self.ticket, self.remaining_s(), on_output, rec or self.rec)


async def unless_disconnected(request: Request, work):
    """Await `work` (a coroutine); cancel it when the client disconnects first (its KV is freed by the abort)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise asyncio.CancelledError("the client disconnected")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# Seconds between SSE keep-alive comments on a quiet stream (a long compile): proxies drop idle connections.
SSE_PING_S = 15


def event_stream(call: Call, produce, error_event):
    """Server-sent events `data: ...` from `produce(send)` (a coroutine that awaits `send(text)` per event), then
    `data: [DONE]`. An error after the headers went out is the last event before [DONE] (`error_event(e)` renders
    it). The call ends (ticket released, metrics, log) whatever ends the stream: done, failed, or the client gone.
    """
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def send(text: str):
        await queue.put(text)

    async def work():
        try:
            await produce(send)
        finally:
            await queue.put(done)

    async def events():
        worker = asyncio.ensure_future(work())  # its own task: a client going away cancels it below, not mid-write
        error: BaseException | None = None
        try:
            while (item := await queue.get()) is not done:
                yield {"data": item}
            await worker  # raises the call's error, if any
            yield {"data": "[DONE]"}
        except asyncio.CancelledError as e:
            error = e
            raise
        except Exception as e:  # noqa: BLE001 - reported to the client, then logged with the call
            error = e
            if not isinstance(e, RequestError):
                e = RequestError(grpc.StatusCode.INTERNAL, f"internal error: {e!r}")
            yield {"data": json.dumps(error_event(e))}
            yield {"data": "[DONE]"}
        finally:
            # NOTE: shielded: sse-starlette cancels through an anyio scope, which would cancel every await here
            # again; the worker's abort frees the KV and the exit releases the admission ticket.
            with anyio.CancelScope(shield=True):
                if not worker.done():
                    worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
                await call.__aexit__(type(error) if error else None, error, None)

    return EventSourceResponse(events(), sep="\n", ping=SSE_PING_S)
