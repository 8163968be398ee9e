"""AsyncEngine: an LLMEngine driven by a background loop thread, feeding async streams of GenerateOutput deltas
(the serving API of docs/INTERFACES.md). Only the loop thread touches the LLMEngine; callers hand it requests
and aborts through an inbox."""

from __future__ import annotations

import asyncio
import concurrent.futures
import collections
import threading
from typing import AsyncIterator

from .config import EngineConfig
from .engine import LLMEngine
from .outputs import EngineStats, GenerateOutput, Usage
from .requests import ConstraintSpec, GenerateRequest


class AsyncEngine:
    """An LLMEngine driven by a background thread; `generate()` streams deltas to asyncio callers."""

    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.config = engine.config
        self.max_model_len = engine.max_model_len
        self._inbox: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dead: BaseException | None = None
        engine.on_compiled = self._wake.set

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> "AsyncEngine":
        """An AsyncEngine over `LLMEngine.from_config(cfg)` (not started: `start()` or the first `generate()`)."""
        return cls(LLMEngine.from_config(cfg))

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="structgen-engine", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """Stop the loop; every request still in flight finishes with "abort"."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        self.engine.close()

    async def generate(self, req: GenerateRequest) -> AsyncIterator[GenerateOutput]:
        """Stream deltas of `req` until one has finished=True. Request errors arrive as finish_reason="error".
        Closing the iterator early (a cancelled client) aborts the request and frees its KV blocks."""
        if self._thread is None:
            await self.start()
        queue: asyncio.Queue = asyncio.Queue()
        if req.request_id in self._streams or self._stopping or self._dead is not None:
            why = (f"request id {req.request_id!r} is already in flight" if req.request_id in self._streams
                   else "the engine is shutting down")
            yield GenerateOutput(req.request_id, [], "", True, "error", why, Usage(len(req.prompt_token_ids)))
            return
        self._streams[req.request_id] = (asyncio.get_running_loop(), queue)
        self._inbox.append(("add", req))
        self._wake.set()
        finished = False
        try:
            while not finished:
                out = await queue.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self._inbox.append(("abort", req.request_id))
                self._wake.set()
            self._streams.pop(req.request_id, None)

    async def compile(self, spec: ConstraintSpec, *, deadline: float | None = None, client: str | None = None):
        """Compile in the engine's compile pool (structgen/fsm/compile_pool.py): raises ConstraintError for a bad
        constraint, CompileQueueFullError when the pool is full. deadline: time.monotonic() the caller gives up at;
        client: whose compile it is (the per-client bound). Cancelling the awaiting task stops the compile."""
        fut = self.engine.compiler.submit(spec.kind, spec.value, dict(spec.options), deadline=deadline, client=client)
        compiled, _status = await asyncio.wrap_future(fut)
        return compiled

    def compile_stats(self) -> dict:
        """The compile pool's counters and gauges (CompilePool.snapshot_stats)."""
        return self.engine.compiler.snapshot_stats()

    async def abort(self, request_id: str) -> None:
        self._inbox.append(("abort", request_id))
        self._wake.set()

    async def flush_prefix_cache(self) -> int:
        """Empty the prefix cache (blocks running requests hold stay); runs on the loop thread between steps."""
        if self._thread is None:
            await self.start()
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._inbox.append(("flush", done))
        self._wake.set()
        return await asyncio.wrap_future(done)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    # ----- the loop thread -----
    def _loop(self) -> None:
        eng = self.engine
        try:
            while not self._stopping:
                while self._inbox:
                    op, arg = self._inbox.popleft()
                    if op == "add":
                        eng.add_request(arg)
                    elif op == "flush":
                        arg.set_result(eng.flush_prefix_cache())
                    else:
                        eng.abort(arg)
                if eng.has_work():
                    self._dispatch(eng.step())
                    continue
                self._wake.wait(0.5)
                self._wake.clear()
        except BaseException as e:  # noqa: BLE001 - a crashed loop must fail every stream, not hang them
            self._dead = e
            eng.fail_all(f"engine failure: {type(e).__name__}: {e}")
            self._dispatch(eng.drain_outputs())
            raise
        eng.abort_all()
        self._dispatch(eng.step())

    def _dispatch(self, outputs: list[GenerateOutput]) -> None:
        for o in outputs:
            target = self._streams.get(o.request_id)
            if target is not None:
                loop, queue = target
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, o)
                except RuntimeError:
                    pass                # the caller's event loop is closed; nobody is listening
