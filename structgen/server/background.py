"""BackgroundServer: a Server on its own event loop in a daemon thread (tests, notebooks, embedding).

    with BackgroundServer(engine, ServerConfig(port=0)) as bg:
        client = structgen.Client(bg.target)
"""

from __future__ import annotations

import asyncio
import threading

from .config import ServerConfig
from .server import Server


class BackgroundServer:
    """Runs `Server(engine, config)` in a thread. `start()` blocks until it listens; `port` / `target` then."""

    def __init__(self, engine, config: ServerConfig):
        self.server = Server(engine, config)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="structgen-server", daemon=True)

    def _main(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as e:  # surface start failures to the caller of start(), not in a thread log
            self._error = e
            self._started.set()
            return
        self._started.set()
        self.loop.run_until_complete(self.server.wait_closed())

    def start(self, timeout: float = 600) -> "BackgroundServer":
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"the server did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def target(self) -> str:
        host = self.server.config.host
        return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host}:{self.port}"

    @property
    def http_url(self) -> str | None:
        """The HTTP API's base URL (None when the server serves no HTTP)."""
        if self.server.http_port is None:
            return None
        host = self.server.config.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host}:{self.server.http_port}"

    def call(self, coro, timeout: float = 60):
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, drain_timeout_s: float = 5.0, timeout: float = 120):
        """Drain (up to `drain_timeout_s`), stop the server and its engine, join the thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(drain_timeout_s), self.loop).result(timeout)
            self._thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
