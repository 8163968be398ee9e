"""Fixtures shared across test folders.

`real_server`: one real structgen server (the default model, the real engine) on a free loopback port, started
on first use and shared by the whole session (tests/server/test_end_to_end.py, tests/client/test_sync.py,
tests/client/test_cli.py, tests/test_schemas.py), so the model loads once. It requires the API key
`REAL_SERVER_KEY`; use the `client` fixture for an authenticated Client.
"""

from __future__ import annotations

import pytest

REAL_SERVER_KEY = "sk-test-structgen"
REAL_SERVER_MAX_QUEUE = 50


@pytest.fixture(scope="session")
def real_server():
    from structgen.engine.config import EngineConfig
    from structgen.engine.async_engine import AsyncEngine
    from structgen.server.background import BackgroundServer
    from structgen.server.config import ServerConfig

    # 256 MiB of KV (~5.8k tokens of SmolLM2-135M) is plenty for tests and keeps the process small.
    engine = AsyncEngine.from_config(EngineConfig(model="default", max_num_seqs=32, kv_cache_bytes=256 << 20))
    config = ServerConfig(port=0, http_port=0, max_queue=REAL_SERVER_MAX_QUEUE, api_keys=frozenset({REAL_SERVER_KEY}),
                          metrics_port=0, drain_timeout_s=5.0)
    server = BackgroundServer(engine, config).start()
    yield server
    server.stop(drain_timeout_s=2.0)


@pytest.fixture
def client(real_server):
    from structgen import Client

    with Client(real_server.target, api_key=REAL_SERVER_KEY, timeout=300) as c:
        yield c


@pytest.fixture
def http_url(real_server) -> str:
    """The base URL of the real server's HTTP API (OpenAI /v1, SGLang /generate): same engine as gRPC."""
    return real_server.http_url


@pytest.fixture
def real_api_key() -> str:
    return REAL_SERVER_KEY
