"""StructGen servicer: the gRPC face of the GenerationCore (generation.py). Protobuf conversion lives in wire.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import grpc

from .. import __version__
from .._proto import structgen_pb2 as pb
from .._proto import structgen_pb2_grpc as pb_grpc
from . import wire
from .admission import Ticket
from .auth import client_id
from .generation import CallRecord, CompiledRegistry, GenerationCore, deadline_after  # noqa: F401 (re-export)
from .wire import RequestError

# Request ids go into every log line and response: a client's own id, not a payload.
MAX_REQUEST_ID_CHARS = 256


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


def _client_of(context) -> str:
    """Who a call is from, for per-client bounds (auth.client_id)."""
    auth = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
    return client_id(auth, str(context.peer()))


class StructGenServicer(pb_grpc.StructGenServicer):
    def __init__(self, core: GenerationCore):
        self.core = core
        self.engine = core.engine
        self.config = core.config
        self.admission = core.admission

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
        rec = CallRecord("Compile", uuid.uuid4().hex)
        try:
            ref = wire.constraint_from_pb(request.constraint, allow_compiled_id=False)
            if ref.spec is None:
                raise wire.invalid("constraint is unset: give a json_schema, regex or choice")
            t0 = time.perf_counter()
            compiled, hit = await self._compile(ref.spec, context)
            elapsed = time.perf_counter() - t0
            cid, _ = self.core.compiled.put(compiled)
            return pb.CompileResponse(id=cid, num_states=int(getattr(compiled, "num_states", 0)),
                                      compile_time_s=elapsed, cached=hit)
        except RequestError as e:
            await self._fail(rec, context, e)
        finally:
            self.core.finish(rec)

    async def GetServerInfo(self, request, context) -> pb.ServerInfo:
        engine = self.engine
        load = self.core.load()
        cfg = getattr(engine, "config", None)
        model = self.core.model_name()
        max_model_len = int(engine.max_model_len)
        fingerprint = await self.core.engine_fingerprint()
        return pb.ServerInfo(
            model=model, tokenizer_fingerprint=engine.tokenizer.fingerprint,
            vocab_size=engine.tokenizer.vocab_size, version=__version__,
            device=str(getattr(cfg, "device", "cpu")),
            limits=pb.Limits(max_model_len=max_model_len,
                             max_tokens=min(self.config.max_tokens_limit, max_model_len - 1),
                             default_max_tokens=self.config.default_max_tokens, max_queue=self.config.max_queue,
                             max_request_bytes=self.config.max_request_bytes),
            auth_required=self.config.auth_required, load=pb.Load(**load),
            weights_hash=fingerprint["weights_hash"], dtype=fingerprint["dtype"],
            engine_config_json=json.dumps(fingerprint["engine_config"], sort_keys=True),
        )

    # ---- shared by Generate and GenerateStream ----------------------------------------------------------

    async def _compile(self, spec, context) -> tuple[object, bool]:
        """(compiled constraint, cache hit); stops at the call's deadline and when the client goes away."""
        return await self.core.compile(spec, deadline=deadline_after(context.time_remaining()),
                                       client=_client_of(context))

    async def _serve(self, method: str, request: pb.GenerateRequest, context, on_output,
                     request_id: str | None = None) -> CallRecord:
        """Run one generation (its `sampling.n` choices), feeding every engine output to `on_output(index, out)`;
        aborts the call on any failure."""
        rec = CallRecord(method, request_id or request.request_id or uuid.uuid4().hex)
        ticket: Ticket | None = None
        try:
            ticket = self.admission.admit(uuid.uuid4().hex)  # the engine's id: unique even if clients reuse ids
            engine_requests = await self._engine_requests(request, ticket.engine_id, rec, context)
            await self.core.run(engine_requests, ticket, context.time_remaining(), on_output, rec)
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
            self.core.finish(rec)

    async def _engine_requests(self, request: pb.GenerateRequest, engine_id: str, rec: CallRecord, context) -> list:
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
            constraint = self.core.compiled.get(ref.compiled_id)
        elif ref.spec is not None:
            constraint, _ = await self._compile(ref.spec, context)
        else:
            constraint = None
        if constraint is not None:
            await self.core.check_budget(constraint, sampling.max_tokens, max_model_len - len(prompt_ids))
        speculation = request.speculation if request.HasField("speculation") else None
        return [GenerateRequest(request_id=engine_id if i == 0 else f"{engine_id}#{i}", prompt_token_ids=prompt_ids,
                                sampling=choice_sampling, constraint=constraint, speculation=speculation)
                for i, choice_sampling in enumerate(self.core.choices(sampling))]

    async def _fail(self, rec: CallRecord, context, e: RequestError):
        rec.status, rec.message = e.code.name, e.message
        if e.metadata:
            context.set_trailing_metadata(e.metadata)
        await context.abort(e.code, e.message)
