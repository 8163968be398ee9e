"""What `Client` and `AsyncClient` share: the target(s), the default deadline, the API key metadata, the channels
and their stubs. Each subclass names its grpc flavour (`grpc` or `grpc.aio`), how it reads a channel's state, and
does the waiting.

One target is one channel, used exactly as before several targets existed. Listed replicas get one channel each
and a `balancer.Balancer` that picks per call and fails over (see balancer.py for the policy)."""

from __future__ import annotations

from typing import Sequence

import grpc

from . import wire
from .balancer import BALANCES, Balancer, Replica, ReplicaStatus, channel_options
from .targets import parse_targets


class BaseClient:
    """`target`: "host:port"; several replicas as a list or a comma-separated string ("h1:p1,h2:p2"); or a gRPC
    resolver URI grpcio balances itself ("dns:///name:port", "ipv4:10.0.0.1:50051,10.0.0.2:50051"). `timeout`
    (seconds) is the default deadline of every call, failovers included. `api_key` is sent as
    `authorization: Bearer KEY`. Pass `credentials` (grpc.ssl_channel_credentials()) for TLS. `balance`
    ("affinity" | "round_robin") picks among listed replicas (structgen.client.balancer)."""

    _grpc = None  # the module whose insecure_channel / secure_channel the subclass uses

    def __init__(self, target: str | Sequence[str], api_key: str | None = None, timeout: float | None = None, *,
                 credentials: grpc.ChannelCredentials | None = None, max_message_bytes: int = 16 << 20,
                 balance: str = "affinity"):
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
        targets = parse_targets(target)
        self.target = targets.single or ",".join(targets.replicas)
        self.timeout = timeout
        self._metadata = wire.auth_metadata(api_key)
        self._credentials = credentials
        self._stubs: dict[str, object] = {}
        self._channel = None
        self._balancer: Balancer | None = None
        if targets.listed:
            options = channel_options(max_message_bytes, health_checked=True)
            self._balancer = Balancer([self._replica(t, self._open(t, options)) for t in targets.replicas], balance)
        else:
            self._channel = self._open(targets.single, channel_options(max_message_bytes, balanced=targets.balanced))

    def _open(self, target: str, options: list):
        if self._credentials is not None:
            return self._grpc.secure_channel(target, self._credentials, options)
        return self._grpc.insecure_channel(target, options)

    def _replica(self, target: str, channel) -> Replica:
        """A listed replica on `channel`, with the subclass's way of reading the channel's state."""
        raise NotImplementedError

    def replicas(self) -> tuple[ReplicaStatus, ...]:
        """Each listed replica's channel state and this client's calls there (empty for one target)."""
        return self._balancer.status() if self._balancer is not None else ()

    def _method(self, rpc: str):
        """The stub method of `rpc` ("SERVICE/Method") on the one channel; stubs are made on first use."""
        service, name = rpc.split("/")
        stub = self._stubs.get(service)
        if stub is None:
            stub = self._stubs[service] = wire.stubs(self._channel, service)
        return getattr(stub, name)

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout
