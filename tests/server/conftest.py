"""Servers for tests of the server's logic: a real grpc.aio server on a free loopback port (BackgroundServer)
over FakeEngine, a stand-in with the documented AsyncEngine API for tests of the server's own logic (admission,
auth, deadlines, cancel, drain). It "generates" a fixed text one token per `step_s`; end-to-end tests use the
real engine."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from structgen.engine.outputs import EngineStats, GenerateOutput, Timings, TokenLogprob, Usage
from structgen.errors import UnsupportedSchemaError
from structgen.server.config import ServerConfig
from structgen.server.background import BackgroundServer


def serve(engine, **config) -> BackgroundServer:
    config.setdefault("port", 0)
    return BackgroundServer(engine, ServerConfig(**config)).start()


@pytest.fixture
def serve_fake():
    """serve_fake(engine, **ServerConfig fields) -> a started BackgroundServer; all stopped at teardown."""
    started: list[BackgroundServer] = []

    def make(engine, **config) -> BackgroundServer:
        st = serve(engine, **config)
        started.append(st)
        return st

    yield make
    for st in started:
        st.stop(drain_timeout_s=0.5)



@dataclass
class FakeCursor:
    min_tokens: int

    def min_tokens_to_finish(self) -> int:
        return self.min_tokens


@dataclass
class FakeCompiled:
    key: str
    num_states: int = 3
    min_tokens: int = 1  # what the admission check's bound says (the fake never constrains)

    def cursor(self):
        return FakeCursor(self.min_tokens)


@dataclass
class FakeConfig:
    model: str = "fake-model"
    device: str = "cpu"


class FakeEngine:
    def __init__(self, tokenizer, text: str = "the quick brown fox jumps over the lazy dog. " * 6, step_s: float = 0.0,
                 max_model_len: int = 512):
        self.tokenizer = tokenizer
        self.config = FakeConfig()
        self.max_model_len = max_model_len
        self.text = text
        self.step_s = step_s
        self.started = self.stopped = False
        self.running: dict[str, asyncio.Event] = {}  # request id -> abort flag
        self.aborted: list[str] = []
        self.requests: list = []      # every GenerateRequest, in arrival order
        self.min_tokens = 1           # the compiled constraints' min_tokens_to_finish
        self.finish_reason = None     # overrides the last output's reason ("budget", "error", ...)
        self.compiled: dict[str, FakeCompiled] = {}
        self.error_text = "fake failure"  # the engine's error of a finish_reason "error" output

    async def start(self):
        self.started = True

    async def shutdown(self):
        self.stopped = True

    async def compile(self, spec, **_):
        value = json.loads(spec.value) if spec.kind == "json_schema" and isinstance(spec.value, str) else spec.value
        if spec.kind == "json_schema" and isinstance(value, dict) and "not" in value:
            raise UnsupportedSchemaError("not", "/not")
        key = f"{spec.kind}:{spec.value!r}"
        # Held like the compile cache holds them (the servicer's registry of compile ids holds them weakly).
        compiled = self.compiled.setdefault(key, FakeCompiled(key=key, min_tokens=self.min_tokens))
        compiled.min_tokens = self.min_tokens
        return compiled

    async def abort(self, request_id: str):
        self.aborted.append(request_id)
        if request_id in self.running:
            self.running[request_id].set()

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self.running), kv_blocks_used=len(self.running), kv_blocks_free=100)

    async def generate(self, req):
        self.requests.append(req)
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
                if last and self.finish_reason:
                    reason = self.finish_reason
                # Fake log-probabilities: -(position / 10), alternatives the next ids down.
                logprobs = [TokenLogprob(tok, self.tokenizer.decode([tok]), -n / 10,
                                         tuple((tok - k - 1, "x", -n / 10 - k - 1)
                                               for k in range(req.sampling.top_logprobs)))] \
                    if req.sampling.logprobs else None
                yield GenerateOutput(req.request_id, [tok], self.tokenizer.decode([tok]), last, reason,
                                     error=self.error_text if reason == "error" else None,
                                     usage=Usage(len(req.prompt_token_ids), 0, n),
                                     timings=Timings(0.0, 0.001, 0.001 * n), logprobs=logprobs)
        finally:
            self.running.pop(req.request_id, None)


@pytest.fixture
def fake_engine_cls():
    return FakeEngine
