"""Servers for tests: a real grpc.aio server on a free loopback port, run in a background thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

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
