"""StructGen servicer: validate, admit, run on the engine, answer. Protobuf conversion lives in wire.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from .. import __version__
from .._proto import structgen_pb2 as pb
from .._proto import structgen_pb2_grpc as pb_grpc
from ..errors import ConstraintError
from . import wire
from .admission import Admission, Ticket
from .config import ServerConfig
from .metrics import ServerMetrics
from .request_log import log_request
from .wire import RequestError


@dataclass
class _CallRecord:
    """What one call's log line and metrics need, filled in as the call goes."""

    method: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    status: str = "OK"
    message: str = ""
    prompt: str | None = None
    final: object | None = None  # the engine's last GenerateOutput


class CompiledRegistry:
    """Compile ids -> compiled constraints, least recently used dropped past `capacity`."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[str, object] = OrderedDict()

    @staticmethod
    def id_for(compiled) -> str:
        # NOTE: derived from the compile-cache key (constraint + tokenizer fingerprint), so the same constraint
        # gets the same id on every replica serving the same tokenizer.
        return "c-" + hashlib.sha256(str(compiled.key).encode()).hexdigest()[:32]

    def put(self, compiled) -> tuple[str, bool]:
        cid = self.id_for(compiled)
        seen = cid in self._items
        self._items[cid] = compiled
        self._items.move_to_end(cid)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return cid, seen

    def get(self, cid: str):
        compiled = self._items.get(cid)
        if compiled is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"unknown compiled constraint id {cid!r}: it was never compiled on this server, or "
                               f"was dropped (the server keeps {self.capacity}); call Compile again")
        self._items.move_to_end(cid)
        return compiled


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
        parts: list[str] = []

        async def collect(out):
            parts.append(out.text)

        rec = await self._serve("Generate", request, context, collect)
        final = rec.final
        return pb.GenerateResponse(request_id=rec.request_id, text="".join(parts),
                                   finish_reason=wire.finish_reason_pb(final.finish_reason),
                                   usage=wire.usage_pb(final.usage), timings=wire.timings_pb(final.timings))

    async def GenerateStream(self, request: pb.GenerateRequest, context) -> None:
        rid = request.request_id or uuid.uuid4().hex

        async def send(out):
            if out.finished:
                await context.write(pb.GenerateStreamResponse(
                    request_id=rid, text=out.text, finish_reason=wire.finish_reason_pb(out.finish_reason),
                    usage=wire.usage_pb(out.usage), timings=wire.timings_pb(out.timings)))
            elif out.text:
                await context.write(pb.GenerateStreamResponse(request_id=rid, text=out.text))

        await self._serve("GenerateStream", request, context, send, request_id=rid)

    async def Compile(self, request: pb.CompileRequest, context) -> pb.CompileResponse:
        rec = _CallRecord("Compile", uuid.uuid4().hex)
        try:
            ref = wire.constraint_from_pb(request.constraint, allow_compiled_id=False)
            if ref.spec is None:
                raise wire.invalid("constraint is unset: give a json_schema, regex or choice")
            t0 = time.perf_counter()
            compiled, hit = await self._compile(ref.spec)
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

    async def _compile(self, spec) -> tuple[object, bool]:
        """(compiled constraint, whether this server compiled the same constraint before)."""
        try:
            compiled = await self.engine.compile(spec)
        except ConstraintError as e:
            raise wire.constraint_error(e) from None
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
        """Run one generation, feeding every engine output to `on_output`; aborts the call on any failure."""
        rec = _CallRecord(method, request_id or request.request_id or uuid.uuid4().hex)
        ticket: Ticket | None = None
        try:
            ticket = self.admission.admit(uuid.uuid4().hex)  # the engine's id: unique even if clients reuse ids
            engine_request = await self._engine_request(request, ticket.engine_id, rec)
            await self._run(engine_request, ticket, context, on_output, rec)
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

    async def _engine_request(self, request: pb.GenerateRequest, engine_id: str, rec: _CallRecord):
        from ..engine.requests import GenerateRequest

        tokenizer = self.engine.tokenizer
        text = wire.prompt_text(request, tokenizer)
        if self.config.log_prompts:
            rec.prompt = text
        prompt_ids = tokenizer.encode(text)
        sampling = wire.sampling_from_pb(request, prompt_len=len(prompt_ids), max_model_len=self.engine.max_model_len,
                                         default_max_tokens=self.config.default_max_tokens,
                                         max_tokens_limit=self.config.max_tokens_limit)
        ref = wire.constraint_from_pb(request.constraint)
        if ref.compiled_id is not None:
            constraint = self.compiled.get(ref.compiled_id)
        elif ref.spec is not None:
            constraint, _ = await self._compile(ref.spec)
        else:
            constraint = None
        speculation = request.speculation if request.HasField("speculation") else None
        return GenerateRequest(request_id=engine_id, prompt_token_ids=prompt_ids, sampling=sampling,
                               constraint=constraint, speculation=speculation)

    async def _run(self, engine_request, ticket: Ticket, context, on_output, rec: _CallRecord):
        """Stream the engine's outputs into `on_output` under the call's deadline; the last one goes to `rec`.

        NOTE: whatever ends the call early (deadline, client cancel, shutdown) aborts the engine request, so
        its KV blocks are freed at once rather than when generation would have ended.
        """
        remaining = context.time_remaining()
        finished = False
        try:
            async with asyncio.timeout(remaining), contextlib.aclosing(self.engine.generate(engine_request)) as outs:
                async for out in outs:
                    await on_output(out)
                    if out.finished:
                        finished = True
                        rec.final = out  # logged even when it is an error
                        self._check_final(out, ticket)
                        return
            raise RequestError(grpc.StatusCode.INTERNAL, "the engine ended the request without a final output")
        except TimeoutError:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"the deadline ({remaining:.3f} s) passed before generation finished; the request "
                               f"was stopped: raise the deadline or lower max_tokens") from None
        finally:
            if not finished:
                await asyncio.shield(self.engine.abort(ticket.engine_id))

    @staticmethod
    def _check_final(out, ticket: Ticket):
        if out.finish_reason == "abort":
            if ticket.stop_reason is not None:
                raise RequestError(ticket.stop_reason, ticket.stop_message)
            raise RequestError(grpc.StatusCode.ABORTED, "the engine aborted the request")
        if out.finish_reason == "error":
            raise RequestError(grpc.StatusCode.INTERNAL, f"generation failed: {out.error or 'unknown error'}")
        return out

    async def _fail(self, rec: _CallRecord, context, e: RequestError):
        rec.status, rec.message = e.code.name, e.message
        if e.metadata:
            context.set_trailing_metadata(e.metadata)
        await context.abort(e.code, e.message)

    def _finish(self, rec: _CallRecord):
        f = rec.final
        usage = getattr(f, "usage", None)
        timings = getattr(f, "timings", None)
        counts = dict(prompt_tokens=getattr(usage, "prompt_tokens", 0),
                      cached_tokens=getattr(usage, "cached_tokens", 0),
                      completion_tokens=getattr(usage, "completion_tokens", 0))
        ttft = getattr(timings, "ttft_s", None)
        total = getattr(timings, "total_s", None)
        if total is None:
            total = time.perf_counter() - rec.started
        self.metrics.record_request(rec.method, rec.status, ttft_s=ttft, total_s=total, **counts)
        log_request(request_id=rec.request_id, method=rec.method, status=rec.status, message=rec.message,
                    finish_reason=getattr(f, "finish_reason", None), queued_s=getattr(timings, "queued_s", None),
                    ttft_s=ttft, total_s=total, prompt=rec.prompt, **counts)
