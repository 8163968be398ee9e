"""Servers for tests: a real grpc.aio server on a free loopback port, run in a background thread; and
FakeEngine, a stand-in with the documented AsyncEngine API for tests of the server's own logic (admission,
auth, deadlines, cancel, drain). It "generates" a fixed text one token per `step_s`; end-to-end tests use the
real engine."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from structgen.engine.outputs import EngineStats, GenerateOutput, Timings, Usage
from structgen.errors import UnsupportedSchemaError
from structgen.server.config import ServerConfig
from structgen.server.server import Server


class ServerThread:
    """Runs `Server(engine, config)` on its own event loop in a daemon thread; `port` once started."""

    def __init__(self, engine, config: ServerConfig):
        self.server = Server(engine, config)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as e:  # surface start failures in the test, not in a thread log
            self._error = e
            self._started.set()
            return
        self._started.set()
        self.loop.run_until_complete(self.server.wait_closed())

    def start(self, timeout: float = 300) -> "ServerThread":
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coro, timeout: float = 60):
        """Run a coroutine on the server's loop (e.g. engine.stats()) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, drain_timeout_s: float = 5.0, timeout: float = 60):
        if self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self.server.stop(drain_timeout_s), self.loop)
            fut.result(timeout)
            self._thread.join(timeout)


def serve(engine, **config) -> ServerThread:
    config.setdefault("port", 0)
    return ServerThread(engine, ServerConfig(**config)).start()


@pytest.fixture
def serve_fake():
    """serve_fake(engine, **ServerConfig fields) -> a started ServerThread; all stopped at teardown."""
    started: list[ServerThread] = []

    def make(engine, **config) -> ServerThread:
        st = serve(engine, **config)
        started.append(st)
        return st

    yield make
    for st in started:
        st.stop(drain_timeout_s=0.5)



@dataclass
class FakeCompiled:
    key: str
    num_states: int = 3

    def cursor(self):  # pragma: no cover  (never driven: the fake does not constrain)
        raise NotImplementedError


@dataclass
class FakeConfig:
    model: str = "fake-model"
    device: str = "cpu"


class FakeEngine:
    def __init__(self, tokenizer, text: str = "the quick brown fox jumps over the lazy dog. " * 6, step_s: float = 0.0, max_model_len: int = 512):
        self.tokenizer = tokenizer
        self.config = FakeConfig()
        self.max_model_len = max_model_len
        self.text = text
        self.step_s = step_s
        self.started = self.stopped = False
        self.running: dict[str, asyncio.Event] = {}  # request id -> abort flag
        self.aborted: list[str] = []

    async def start(self):
        self.started = True

    async def shutdown(self):
        self.stopped = True

    async def compile(self, spec):
        if spec.kind == "json_schema" and isinstance(spec.value, dict) and "not" in spec.value:
            raise UnsupportedSchemaError("not", "/not")
        return FakeCompiled(key=f"{spec.kind}:{spec.value!r}")

    async def abort(self, request_id: str):
        self.aborted.append(request_id)
        if request_id in self.running:
            self.running[request_id].set()

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self.running), kv_blocks_used=len(self.running), kv_blocks_free=100)

    async def generate(self, req):
        abort = self.running.setdefault(req.request_id, asyncio.Event())
        ids = self.tokenizer.encode(self.text)[: req.sampling.max_tokens]
        try:
            for n, tok in enumerate(ids, 1):
                if self.step_s:
                    try:
                        await asyncio.wait_for(abort.wait(), self.step_s)
                    except TimeoutError:
                        pass
                if abort.is_set():
                    yield GenerateOutput(req.request_id, [], "", True, "abort",
                                         usage=Usage(len(req.prompt_token_ids), 0, n - 1))
                    return
                last = n == len(ids)
                reason = ("length" if len(ids) == req.sampling.max_tokens else "stop") if last else None
                yield GenerateOutput(req.request_id, [tok], self.tokenizer.decode([tok]), last, reason,
                                     usage=Usage(len(req.prompt_token_ids), 0, n),
                                     timings=Timings(0.0, 0.001, 0.001 * n))
        finally:
            self.running.pop(req.request_id, None)


@pytest.fixture
def fake_engine_cls():
    return FakeEngine
