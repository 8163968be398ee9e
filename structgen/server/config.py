"""ServerConfig: everything the gRPC layer needs to know, validated once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings


def load_api_keys(path: str | os.PathLike | None = None) -> frozenset[str]:
    """Keys from a file (one per line; blank lines and `#` comments skipped) plus STRUCTGEN_API_KEYS."""
    keys: set[str] = set()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"API key file not found: {p}")
        for line in p.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.add(line)
        if not keys:
            raise ValueError(f"API key file {p} holds no keys")
    keys.update(k.strip() for k in settings.get("STRUCTGEN_API_KEYS").split(",") if k.strip())
    return frozenset(keys)


DEFAULT_HTTP_PORT = 8000


def http_port_from_flag(value: str | None) -> int | None:
    """`--http-port N`: absent -> 8000, 0 -> no HTTP, N -> N (in the dataclass, None is "no HTTP" and 0 "a free
    port", as for `port`: programs that build a ServerConfig get no HTTP unless they ask for it)."""
    if value is None:
        return DEFAULT_HTTP_PORT
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"--http-port must be a port number (0: no HTTP), got {value!r}") from None
    return None if port == 0 else port


@dataclass(frozen=True)
class ServerConfig:
    """Options of one server process (the engine has its own EngineConfig).

    NOTE: `port=0` binds a free port; `Server.port` tells which one after `start()`.
    Each field's metadata is the help of its `structgen serve` flag (structgen/server/cli.py derives the flags);
    `from_flag` turns the flag's value (None when absent) into the field's.
    """

    host: str = field(default="127.0.0.1", metadata={  # loopback: exposing a server is a deliberate choice
        "help": "address to bind (0.0.0.0 for all)"})
    port: int = field(default=50051, metadata={"help": "gRPC port to bind; 0 picks a free one"})
    # The OpenAI- and SGLang-compatible HTTP API on the same engine (None: off; 0: a free port).
    http_port: int | None = field(default=None, metadata={
        "from_flag": http_port_from_flag,
        "help": f"HTTP port of the OpenAI / SGLang-compatible API on --host (default: {DEFAULT_HTTP_PORT}; 0 turns "
                f"HTTP off)"})
    # Most requests held at once (running + waiting). Past it a request gets RESOURCE_EXHAUSTED at once, so
    # overload shows up as fast errors a load balancer can route around, not as ever-growing latency.
    max_queue: int = field(default=256, metadata={
        "help": "most requests held at once; past it RESOURCE_EXHAUSTED"})
    default_max_tokens: int = field(default=256, metadata={
        "help": "max_tokens when a request leaves it unset"})
    max_tokens_limit: int = field(default=4096, metadata={
        "help": "largest max_tokens a request may ask for (also capped by the model's context length)"})
    # 4 MiB: gRPC's own default; large enough for a long document plus a schema.
    max_request_bytes: int = field(default=4 * 1024 * 1024, metadata={"help": "largest request message"})
    max_response_bytes: int = field(default=4 * 1024 * 1024, metadata={"help": "largest response message"})
    api_keys: frozenset[str] = field(default_factory=frozenset, metadata={  # empty: no auth
        "flag": "--api-key-file", "from_flag": load_api_keys,
        "help": "file of accepted API keys, one per line (also: STRUCTGEN_API_KEYS=k1,k2)"})
    metrics_port: int | None = field(default=None, metadata={  # None: no metrics endpoint
        "help": "serve Prometheus /metrics on this port (0: a free one)"})
    metrics_host: str = field(default="127.0.0.1", metadata={"help": "address of the metrics endpoint"})
    drain_timeout_s: float = field(default=30.0, metadata={
        "flag": "--drain-timeout", "help": "seconds in-flight requests may take to finish on SIGTERM"})
    # 0 for a lone server; behind a load balancer, at least its health-check interval x failure threshold, so the
    # balancer sees /health fail and stops sending before this replica starts refusing (no request meets a 503).
    drain_grace_s: float = field(default=0.0, metadata={
        "flag": "--drain-grace", "help": "seconds between SIGTERM turning readiness (/health, /readiness, gRPC "
                                         "health) off and the server refusing new requests"})
    log_prompts: bool = field(default=False, metadata={  # prompts are often private data
        "help": "include prompt text in request logs (private!)"})
    compiled_registry_size: int = field(default=1024, metadata={
        "help": "Compile ids kept (least recently used dropped)"})

    def __post_init__(self):
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port!r}")
        if self.http_port is not None and (not isinstance(self.http_port, int) or not 0 <= self.http_port <= 65535):
            raise ValueError(f"http_port must be in [0, 65535] or None, got {self.http_port!r}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in [0, 65535] or None, got {self.metrics_port!r}")
        for name in ("max_queue", "default_max_tokens", "max_tokens_limit", "max_request_bytes",
                     "max_response_bytes", "compiled_registry_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit "
                             f"({self.max_tokens_limit})")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.drain_grace_s < 0:
            raise ValueError(f"drain_grace_s must be >= 0, got {self.drain_grace_s}")
        if not isinstance(self.api_keys, frozenset):
            raise TypeError("api_keys must be a frozenset of strings")
        if any(not k or any(c.isspace() for c in k) for k in self.api_keys):
            raise ValueError("API keys must be non-empty and contain no whitespace")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys)

