"""StructGen servicer: validate, admit, run on the engine, answer. Protobuf conversion lives in wire.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from .. import __version__
from .._proto import structgen_pb2 as pb
from .._proto import structgen_pb2_grpc as pb_grpc
from ..errors import CompileCancelledError, CompileQueueFullError, ConstraintError
from ..fsm.budget import budget_refusal
from . import wire
from .admission import Admission, Ticket
from .config import ServerConfig
from .metrics import ServerMetrics
from .request_log import log_request
from .wire import RequestError

def _subclass_names(cls) -> set[str]:
    return {cls.__name__}.union(*(_subclass_names(c) for c in cls.__subclasses__()))


# The engine reports a request's failure as "ErrorType: message"; these types are the constraint's fault.
_CONSTRAINT_ERRORS = frozenset(_subclass_names(ConstraintError))

# Request ids go into every log line and response: a client's own id, not a payload.
MAX_REQUEST_ID_CHARS = 256


@dataclass
class _CallRecord:
    """What one call's log line and metrics need, filled in as the call goes."""

    method: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    status: str = "OK"
    message: str = ""
    prompt: str | None = None
    finals: dict[int, object] = field(default_factory=dict)  # choice index -> its last GenerateOutput


@dataclass
class _Collected:
    """One choice of a unary Generate, as its deltas arrive."""

    parts: list[str] = field(default_factory=list)
    logprobs: list = field(default_factory=list)  # engine TokenLogprobs
    final: object | None = None

    def add(self, out):
        self.parts.append(out.text)
        self.logprobs.extend(getattr(out, "logprobs", None) or ())
        if out.finished:
            self.final = out

    def to_pb(self, index: int) -> pb.Choice:
        f = self.final
        return pb.Choice(index=index, text="".join(self.parts), finish_reason=wire.finish_reason_pb(f.finish_reason),
                         usage=wire.usage_pb(f.usage), timings=wire.timings_pb(f.timings),
                         logprobs=wire.logprobs_pb(self.logprobs))


class CompiledRegistry:
    """Compile ids -> compiled constraints, least recently used dropped past `capacity`.

    NOTE: held weakly: the compile cache (with its byte budget) decides what stays in memory, so ids handed out
    cannot pin constraints past it. An id whose constraint left memory is NOT_FOUND: Compile again (a cache hit on
    disk, milliseconds).
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[str, weakref.ref] = OrderedDict()

    @staticmethod
    def id_for(compiled) -> str:
        # NOTE: derived from the compile-cache key (constraint + tokenizer fingerprint), so the same constraint
        # gets the same id on every replica serving the same tokenizer.
        return "c-" + hashlib.sha256(str(compiled.key).encode()).hexdigest()[:32]

    def put(self, compiled) -> tuple[str, bool]:
        cid = self.id_for(compiled)
        seen = cid in self._items
        self._items[cid] = weakref.ref(compiled)
        self._items.move_to_end(cid)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return cid, seen

    def get(self, cid: str):
        ref = self._items.get(cid)
        compiled = ref() if ref is not None else None
        if compiled is None:
            self._items.pop(cid, None)
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"unknown compiled constraint id {cid!r}: it was never compiled on this server, or "
                               f"was dropped (the server keeps {self.capacity} ids while their constraints fit its "
                               f"compile cache); call Compile again")
        self._items.move_to_end(cid)
        return compiled


def _client_of(context) -> str:
    """Who a call is from, for per-client bounds: its API key (as a digest) or else its connection."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return "key:" + hashlib.sha256(value.encode()).hexdigest()[:16]
    return "peer:" + str(context.peer())


class StructGenServicer(pb_grpc.StructGenServicer):
    def __init__(self, engine, config: ServerConfig, admission: Admission, metrics: ServerMetrics):
        self.engine = engine
        self.config = config
        self.admission = admission
        self.metrics = metrics
        self.compiled = CompiledRegistry(config.compiled_registry_size)
        # Compile keys seen by this server: a repeat is a compile-cache hit (for metrics and Compile.cached).
        self._seen_keys: OrderedDict[str, None] = OrderedDict()

    # ---- RPCs -------------------------------------------------------------------------------------------

    async def Generate(self, request: pb.GenerateRequest, context) -> pb.GenerateResponse:
        collected: dict[int, _Collected] = {}

        async def collect(index: int, out):
            collected.setdefault(index, _Collected()).add(out)

        rec = await self._serve("Generate", request, context, collect)
        choices = [collected[i].to_pb(i) for i in sorted(collected)]
        first = choices[0]  # NOTE: the single fields carry choice 0, so clients that know nothing of n still work
        return pb.GenerateResponse(request_id=rec.request_id, text=first.text, finish_reason=first.finish_reason,
                                   usage=first.usage, timings=first.timings, logprobs=first.logprobs,
                                   choices=choices if len(choices) > 1 else ())

    async def GenerateStream(self, request: pb.GenerateRequest, context) -> None:
        rid = request.request_id or uuid.uuid4().hex

        async def send(index: int, out):
            logprobs = wire.logprobs_pb(getattr(out, "logprobs", None))
            if out.finished:
                await context.write(pb.GenerateStreamResponse(
                    request_id=rid, index=index, text=out.text, logprobs=logprobs,
                    finish_reason=wire.finish_reason_pb(out.finish_reason), usage=wire.usage_pb(out.usage),
                    timings=wire.timings_pb(out.timings)))
            elif out.text or logprobs:  # a token may carry half a character: no text yet, but its logprob
                await context.write(pb.GenerateStreamResponse(request_id=rid, index=index, text=out.text,
                                                              logprobs=logprobs))

        await self._serve("GenerateStream", request, context, send, request_id=rid)

    async def Compile(self, request: pb.CompileRequest, context) -> pb.CompileResponse:
        rec = _CallRecord("Compile", uuid.uuid4().hex)
        try:
            ref = wire.constraint_from_pb(request.constraint, allow_compiled_id=False)
            if ref.spec is None:
                raise wire.invalid("constraint is unset: give a json_schema, regex or choice")
            t0 = time.perf_counter()
            compiled, hit = await self._compile(ref.spec, context)
            elapsed = time.perf_counter() - t0
            cid, _ = self.compiled.put(compiled)
            return pb.CompileResponse(id=cid, num_states=int(getattr(compiled, "num_states", 0)),
                                      compile_time_s=elapsed, cached=hit)
        except RequestError as e:
            await self._fail(rec, context, e)
        finally:
            self._finish(rec)

    async def GetServerInfo(self, request, context) -> pb.ServerInfo:
        engine = self.engine
        load = self.load()
        cfg = getattr(engine, "config", None)
        model = str(getattr(cfg, "model", "default"))
        if model == "default":
            from ..assets import DEFAULT_MODEL_NAME

            model = DEFAULT_MODEL_NAME
        else:
            model = Path(model).name or model
        max_model_len = int(engine.max_model_len)
        return pb.ServerInfo(
            model=model, tokenizer_fingerprint=engine.tokenizer.fingerprint,
            vocab_size=engine.tokenizer.vocab_size, version=__version__,
            device=str(getattr(cfg, "device", "cpu")),
            limits=pb.Limits(max_model_len=max_model_len,
                             max_tokens=min(self.config.max_tokens_limit, max_model_len - 1),
                             default_max_tokens=self.config.default_max_tokens, max_queue=self.config.max_queue,
                             max_request_bytes=self.config.max_request_bytes),
            auth_required=self.config.auth_required, load=pb.Load(**load),
        )

    # ---- shared by Generate and GenerateStream ----------------------------------------------------------

    def load(self) -> dict:
        stats = self.engine.stats()
        used = int(getattr(stats, "kv_blocks_used", 0))
        free = int(getattr(stats, "kv_blocks_free", 0))
        return dict(in_flight=len(self.admission), queued=int(getattr(stats, "queue_len", 0)),
                    running=int(getattr(stats, "running", 0)), kv_blocks_used=used, kv_blocks_total=used + free,
                    kv_blocks_cached=int(getattr(stats, "kv_blocks_cached", 0)))

    def compile_stats(self) -> dict:
        """The compile pool's counters and gauges (empty for an engine without one)."""
        stats = getattr(self.engine, "compile_stats", None)
        return stats() if stats is not None else {}

    async def _compile(self, spec, context) -> tuple[object, bool]:
        """(compiled constraint, whether this server compiled the same constraint before).

        The compile stops at the call's deadline, and when the client goes away (this task is cancelled).
        """
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            compiled = await self.engine.compile(spec, deadline=deadline, client=_client_of(context))
        except ConstraintError as e:
            raise wire.constraint_error(e) from None
        except (CompileQueueFullError, CompileCancelledError) as e:
            raise wire.compile_refusal(e) from None
        key = str(compiled.key)
        hit = key in self._seen_keys
        self._seen_keys[key] = None
        self._seen_keys.move_to_end(key)
        if len(self._seen_keys) > 4 * self.config.compiled_registry_size:
            self._seen_keys.popitem(last=False)
        self.metrics.record_compile(cache_hit=hit)
        return compiled, hit

    async def _serve(self, method: str, request: pb.GenerateRequest, context, on_output,
                     request_id: str | None = None) -> _CallRecord:
        """Run one generation (its `sampling.n` choices), feeding every engine output to `on_output(index, out)`;
        aborts the call on any failure."""
        rec = _CallRecord(method, request_id or request.request_id or uuid.uuid4().hex)
        ticket: Ticket | None = None
        try:
            ticket = self.admission.admit(uuid.uuid4().hex)  # the engine's id: unique even if clients reuse ids
            engine_requests = await self._engine_requests(request, ticket.engine_id, rec, context)
            await self._run(engine_requests, ticket, context, on_output, rec)
            return rec
        except RequestError as e:
            await self._fail(rec, context, e)
        except asyncio.CancelledError:
            rec.status = "CANCELLED"  # the client cancelled or went away; _run already aborted the work
            raise
        except grpc.aio.AbortError:  # context.abort() ending the call: already reported
            raise
        except Exception as e:  # a bug must fail this call only, never the server
            await self._fail(rec, context, RequestError(grpc.StatusCode.INTERNAL, f"internal error: {e!r}"))
        finally:
            if ticket is not None:
                self.admission.release(ticket)
            self._finish(rec)

    async def _engine_requests(self, request: pb.GenerateRequest, engine_id: str, rec: _CallRecord, context) -> list:
        """The engine requests of one call: one per choice (`engine_id`, `engine_id#1`, ...)."""
        from ..engine.requests import GenerateRequest

        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise wire.invalid(f"request_id has {len(request.request_id)} characters; at most {MAX_REQUEST_ID_CHARS}")
        tokenizer = self.engine.tokenizer
        text = wire.prompt_text(request, tokenizer)
        if self.config.log_prompts:
            rec.prompt = text
        prompt_ids = tokenizer.encode(text)
        max_model_len = self.engine.max_model_len
        sampling = wire.sampling_from_pb(request, prompt_len=len(prompt_ids), max_model_len=max_model_len,
                                         default_max_tokens=self.config.default_max_tokens,
                                         max_tokens_limit=self.config.max_tokens_limit,
                                         vocab_size=tokenizer.vocab_size)
        ref = wire.constraint_from_pb(request.constraint)
        if ref.compiled_id is not None:
            constraint = self.compiled.get(ref.compiled_id)
        elif ref.spec is not None:
            constraint, _ = await self._compile(ref.spec, context)
        else:
            constraint = None
        if constraint is not None:
            await self._check_budget(constraint, sampling.max_tokens, max_model_len - len(prompt_ids))
        speculation = request.speculation if request.HasField("speculation") else None
        return [GenerateRequest(request_id=engine_id if i == 0 else f"{engine_id}#{i}", prompt_token_ids=prompt_ids,
                                sampling=choice_sampling, constraint=constraint, speculation=speculation)
                for i, choice_sampling in enumerate(self._choices(sampling))]

    @staticmethod
    def _choices(sampling) -> list:
        """The SamplingParams of each of the request's `n` choices: seed + i when a seed is given. Unseeded
        choices get distinct seeds from the engine, as any unseeded requests do."""
        n = sampling.n
        if n == 1:
            return [sampling]
        return [dataclasses.replace(sampling, n=1, seed=None if sampling.seed is None else (sampling.seed + i) % 2**63)
                for i in range(n)]

    @staticmethod
    async def _check_budget(compiled, max_tokens: int, room: int):
        """Refuse a constraint whose shortest completion cannot fit in min(max_tokens, context room) tokens."""

        try:
            # Off the event loop: the bound may build automaton states the first time a constraint is used.
            tokens = await asyncio.to_thread(lambda: compiled.cursor().min_tokens_to_finish())
        except ConstraintError as e:
            raise wire.constraint_error(e) from None
        refusal = budget_refusal(tokens, max_tokens, room)
        if refusal is not None:
            raise wire.budget_error(refusal)

    async def _run(self, engine_requests: list, ticket: Ticket, context, on_output, rec: _CallRecord):
        """Stream the engine's outputs of every choice into `on_output(index, out)` under the call's deadline;
        each choice's last output goes to `rec.finals`.

        With n > 1 the other choices start once choice 0 has its first token: by then the prompt's KV is in the
        radix cache, so they reuse it instead of computing the prompt n times.
        NOTE: whatever ends the call early (deadline, client cancel, shutdown, one choice failing) aborts every
        unfinished engine request, so their KV blocks are freed at once rather than when generation would end.
        """
        remaining = context.time_remaining()
        unfinished = {r.request_id for r in engine_requests}
        lock = asyncio.Lock()  # one on_output at a time: stream writes must not interleave
        first_token = asyncio.Event()

        async def one(index: int, req):
            async with contextlib.aclosing(self.engine.generate(req)) as outs:
                async for out in outs:
                    first_token.set()
                    async with lock:
                        await on_output(index, out)
                    if out.finished:
                        unfinished.discard(req.request_id)
                        rec.finals[index] = out  # logged even when it is an error
                        self._check_final(out, ticket)
                        return
            raise RequestError(grpc.StatusCode.INTERNAL, "the engine ended the request without a final output")

        tasks = [asyncio.ensure_future(one(0, engine_requests[0]))]
        try:
            async with asyncio.timeout(remaining):
                if len(engine_requests) > 1:
                    started = asyncio.ensure_future(first_token.wait())
                    try:
                        await asyncio.wait((tasks[0], started), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        started.cancel()
                    if not tasks[0].done() or tasks[0].exception() is None:  # choice 0 failing ends the call
                        tasks += [asyncio.ensure_future(one(i, r)) for i, r in enumerate(engine_requests[1:], 1)]
                await asyncio.gather(*tasks)
        except TimeoutError:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"the deadline ({remaining:.3f} s) passed before generation finished; the request "
                               f"was stopped: raise the deadline or lower max_tokens") from None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for request_id in unfinished:
                await asyncio.shield(self.engine.abort(request_id))

    @staticmethod
    def _check_final(out, ticket: Ticket):
        if out.finish_reason == "abort":
            if ticket.stop_reason is not None:
                raise RequestError(ticket.stop_reason, ticket.stop_message)
            raise RequestError(grpc.StatusCode.ABORTED, "the engine aborted the request")
        if out.finish_reason == "error":
            error = out.error or "unknown error"
            if error.split(":", 1)[0] in _CONSTRAINT_ERRORS:
                # The constraint failed while decoding (a state past a limit): the request's fault, not the server's.
                raise wire.invalid_constraint(f"the constraint failed while decoding: {error}")
            raise RequestError(grpc.StatusCode.INTERNAL, f"generation failed: {error}")
        return out

    async def _fail(self, rec: _CallRecord, context, e: RequestError):
        rec.status, rec.message = e.code.name, e.message
        if e.metadata:
            context.set_trailing_metadata(e.metadata)
        await context.abort(e.code, e.message)

    def _finish(self, rec: _CallRecord):
        f = rec.finals.get(0)
        usage = getattr(f, "usage", None)
        timings = getattr(f, "timings", None)
        # The prompt once (choice 0's count), the tokens every choice generated.
        counts = dict(prompt_tokens=getattr(usage, "prompt_tokens", 0),
                      cached_tokens=getattr(usage, "cached_tokens", 0),
                      completion_tokens=sum(getattr(getattr(o, "usage", None), "completion_tokens", 0)
                                            for o in rec.finals.values()))
        ttft = getattr(timings, "ttft_s", None)
        total = getattr(timings, "total_s", None)
        if total is None:
            total = time.perf_counter() - rec.started
        self.metrics.record_request(rec.method, rec.status, ttft_s=ttft, total_s=total, **counts)
        log_request(request_id=rec.request_id, method=rec.method, status=rec.status, message=rec.message,
                    finish_reason=getattr(f, "finish_reason", None), queued_s=getattr(timings, "queued_s", None),
                    ttft_s=ttft, total_s=total, prompt=rec.prompt, **counts)
