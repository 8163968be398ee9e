"""What `Client` and `AsyncClient` share: the target, the default deadline, the API key metadata and the channel's
stubs. Each subclass names its grpc flavour (`grpc` or `grpc.aio`) and does the waiting."""

from __future__ import annotations

import grpc

from . import wire


class BaseClient:
    """`target` is "host:port". `timeout` (seconds) is the default deadline of every call. `api_key` is sent as
    `authorization: Bearer KEY`. Pass `credentials` (grpc.ssl_channel_credentials()) for TLS."""

    _grpc = None  # the module whose insecure_channel / secure_channel the subclass uses

    def __init__(self, target: str, api_key: str | None = None, timeout: float | None = None, *,
                 credentials: grpc.ChannelCredentials | None = None, max_message_bytes: int = 16 << 20):
        self.target = target
        self.timeout = timeout
        self._metadata = wire.auth_metadata(api_key)
        options = wire.channel_options(max_message_bytes)
        self._channel = (self._grpc.secure_channel(target, credentials, options) if credentials
                         else self._grpc.insecure_channel(target, options))
        self._stubs: dict[str, object] = {}

    def _method(self, rpc: str):
        """The stub method of `rpc` ("SERVICE/Method") on this channel; stubs are made on first use."""
        service, name = rpc.split("/")
        stub = self._stubs.get(service)
        if stub is None:
            stub = self._stubs[service] = wire.stubs(self._channel, service)
        return getattr(stub, name)

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout
