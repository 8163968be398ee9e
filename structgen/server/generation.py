"""What every API of the server shares: one engine, one admission queue, one compile cache and registry, the
budget check, running a call's choices under its deadline, and one metrics + log record per call.

The gRPC servicer (servicer.py) and the HTTP APIs (structgen/server/http/) turn their own request shapes into
engine requests and call this; failures are `RequestError`s (a gRPC status code + message) that each API renders
in its own error shape. Nothing here knows protobuf or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

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


@dataclass
class CallRecord:
    """What one call's log line and metrics need, filled in as the call goes."""

    method: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    status: str = "OK"
    message: str = ""
    prompt: str | None = None
    finals: dict[int, object] = field(default_factory=dict)  # choice index -> its last GenerateOutput


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


def deadline_after(remaining_s: float | None) -> float | None:
    """A time.monotonic() deadline `remaining_s` from now (None: no deadline)."""
    return None if remaining_s is None else time.monotonic() + remaining_s


class GenerationCore:
    def __init__(self, engine, config: ServerConfig, admission: Admission, metrics: ServerMetrics):
        self.engine = engine
        self.config = config
        self.admission = admission
        self.metrics = metrics
        self.compiled = CompiledRegistry(config.compiled_registry_size)
        # Compile keys seen by this server: a repeat is a compile-cache hit (for metrics and Compile.cached).
        self._seen_keys: OrderedDict[str, None] = OrderedDict()
        self._fingerprint: dict | None = None

    # ---- state for health, info and metrics --------------------------------------------------------------

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

    def model_name(self) -> str:
        """The served model's name, as GetServerInfo, /v1/models and SGLang's model_path report it."""
        model = str(getattr(getattr(self.engine, "config", None), "model", "default"))
        if model == "default":
            from ..assets import DEFAULT_MODEL_NAME

            return DEFAULT_MODEL_NAME
        return Path(model).name or model

    async def engine_fingerprint(self) -> dict:
        """What decides this server's outputs, for GetServerInfo and /get_server_info (`structgen regress` records
        it): the weights hash, the dtype they run in and every EngineConfig field. The hash is computed once, in a
        thread (the first time for a model file, seconds: it reads every byte; then cached on disk by path, size
        and mtime); "" when the engine has no model on disk (test fakes)."""
        if self._fingerprint is None:
            self._fingerprint = await asyncio.to_thread(self._compute_fingerprint)
        return self._fingerprint

    def _compute_fingerprint(self) -> dict:
        from ..engine.weights_hash import weights_fingerprint

        cfg = getattr(self.engine, "config", None)
        if not dataclasses.is_dataclass(cfg):
            return {"weights_hash": "", "dtype": "", "engine_config": {}}
        try:
            weights = weights_fingerprint(cfg.model)
        except (OSError, ValueError):
            weights = ""
        options = {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
                   for k, v in dataclasses.asdict(cfg).items()}
        dtype = getattr(cfg, "resolved_dtype", None) or getattr(cfg, "dtype", "")
        return {"weights_hash": weights, "dtype": str(dtype), "engine_config": options}

    def max_tokens_limit(self) -> int:
        """The largest max_tokens a request may ask for here (the server's limit, within the context)."""
        return min(self.config.max_tokens_limit, int(self.engine.max_model_len) - 1)

    # ---- constraints ------------------------------------------------------------------------------------

    async def compile(self, spec, *, deadline: float | None, client: str) -> tuple[object, bool]:
        """(compiled constraint, whether this server compiled the same constraint before).

        The compile stops at `deadline` (time.monotonic()), and when the caller goes away (this task is cancelled).
        """
        try:
            compiled = await self.engine.compile(spec, deadline=deadline, client=client)
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

    @staticmethod
    async def check_budget(compiled, max_tokens: int, room: int):
        """Refuse a constraint whose shortest completion cannot fit in min(max_tokens, context room) tokens."""
        try:
            # Off the event loop: the bound may build automaton states the first time a constraint is used.
            tokens = await asyncio.to_thread(lambda: compiled.cursor().min_tokens_to_finish())
        except ConstraintError as e:
            raise wire.constraint_error(e) from None
        refusal = budget_refusal(tokens, max_tokens, room)
        if refusal is not None:
            raise wire.budget_error(refusal)

    # ---- running --------------------------------------------------------------------------------------

    @staticmethod
    def choices(sampling) -> list:
        """The SamplingParams of each of the request's `n` choices: seed + i when a seed is given. Unseeded
        choices get distinct seeds from the engine, as any unseeded requests do."""
        n = sampling.n
        if n == 1:
            return [sampling]
        return [dataclasses.replace(sampling, n=1, seed=None if sampling.seed is None else (sampling.seed + i) % 2**63)
                for i in range(n)]

    async def run(self, engine_requests: list, ticket: Ticket, remaining_s: float | None, on_output,
                  rec: CallRecord):
        """Stream the engine's outputs of every choice into `on_output(index, out)` within `remaining_s` seconds
        (None: no deadline); each choice's last output goes to `rec.finals`.

        With n > 1 the other choices start once choice 0 has its first token: by then the prompt's KV is in the
        radix cache, so they reuse it instead of computing the prompt n times.
        NOTE: whatever ends the call early (deadline, client cancel or disconnect, shutdown, one choice failing)
        aborts every unfinished engine request, so their KV blocks are freed at once rather than when generation
        would end.
        """
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
                        self.check_final(out, ticket)
                        return
            raise RequestError(grpc.StatusCode.INTERNAL, "the engine ended the request without a final output")

        tasks = [asyncio.ensure_future(one(0, engine_requests[0]))]
        try:
            async with asyncio.timeout(remaining_s):
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
                               f"the deadline ({remaining_s:.3f} s) passed before generation finished; the request "
                               f"was stopped: raise the deadline or lower max_tokens") from None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for request_id in unfinished:
                await asyncio.shield(self.engine.abort(request_id))

    @staticmethod
    def check_final(out, ticket: Ticket):
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

    def finish(self, rec: CallRecord):
        """Metrics and the request log line of one finished call (whatever its outcome)."""
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
