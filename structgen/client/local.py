"""A real structgen server in this process, on a free loopback port, for one job (`structgen extract --local`).

The SDK still talks to it over gRPC, so a local run takes the same request path as a remote one: the same
prompt, validation, limits and errors. The server is the server's own code (`server.background.BackgroundServer`
around `server.Server`), started and stopped here; nothing in the SDK drives an engine.

    with local_server(model="default") as srv:
        with Client(srv.target, api_key=srv.api_key) as client: ...
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import sys
from dataclasses import dataclass
from typing import Iterator

# The server, engine and kernels log under "structgen.*". A one-shot command shows their warnings as they
# happen and keeps the rest (request log, load messages) to print only if the run fails.
_LOGGER = "structgen"
_KEPT_RECORDS = 500


@dataclass(frozen=True)
class LocalServer:
    """Where the in-process server listens and the key it accepts (made for this run, so no other local
    process can use the server while it lives)."""

    target: str
    api_key: str
    logs: "_KeptLogs"


class _KeptLogs(logging.Handler):
    """Keeps the last records below WARNING; `print()` writes them to stderr."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: collections.deque = collections.deque(maxlen=_KEPT_RECORDS)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord):
        if record.levelno < logging.WARNING:
            self.records.append(record)

    def print(self):
        if self.records:
            print("structgen extract: the local server's log:", file=sys.stderr)
        for record in self.records:
            print(self.format(record), file=sys.stderr)
        self.records.clear()


@contextlib.contextmanager
def _server_logs() -> Iterator[_KeptLogs]:
    """WARNING and above to stderr at once, the rest kept (printed if the block fails); restored after."""
    logger = logging.getLogger(_LOGGER)
    kept = _KeptLogs()
    loud = logging.StreamHandler(sys.stderr)
    loud.setLevel(logging.WARNING)
    loud.setFormatter(logging.Formatter("structgen: %(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.setLevel(logging.INFO)  # NOTE: else INFO records are dropped before any handler sees them
    logger.addHandler(kept)
    logger.addHandler(loud)
    try:
        yield kept
    except BaseException:
        kept.print()
        raise
    finally:
        logger.removeHandler(loud)
        logger.removeHandler(kept)
        logger.setLevel(level)


@contextlib.contextmanager
def local_server(model: str = "default", device: str = "auto", *, in_flight: int = 1, max_tokens: int | None = None,
                 drain_timeout_s: float = 5.0) -> Iterator[LocalServer]:
    """Load `model` on `device`, serve it on 127.0.0.1 (a free port) until the block ends, then drain for up to
    `drain_timeout_s` and shut the server and its engine down.

    The server's limits are its defaults, raised where the run needs more: room for `in_flight` requests at once,
    and `max_tokens` admitted up to the model's context (a shared server's cap guards others' requests; this
    server has none).
    """
    from ..engine.config import EngineConfig
    from ..engine.async_engine import AsyncEngine
    from ..server.background import BackgroundServer
    from ..server.config import ServerConfig

    key = secrets.token_urlsafe(24)
    config = ServerConfig(host="127.0.0.1", port=0, api_keys=frozenset({key}), drain_timeout_s=drain_timeout_s,
                          max_queue=max(ServerConfig.max_queue, in_flight),
                          max_tokens_limit=max(ServerConfig.max_tokens_limit, max_tokens or 0))
    with _server_logs() as logs:
        engine = AsyncEngine.from_config(EngineConfig(model=model, device=device))
        server = BackgroundServer(engine, config).start()
        try:
            yield LocalServer(server.target, key, logs)
        finally:
            server.stop(drain_timeout_s=drain_timeout_s)
