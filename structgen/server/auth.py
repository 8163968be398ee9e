"""API-key check as a grpc.aio interceptor: `authorization: Bearer KEY` metadata, UNAUTHENTICATED otherwise."""

from __future__ import annotations

import hashlib
import hmac
from typing import Awaitable, Callable

import grpc

# Health checks and reflection stay open: load balancers and grpcurl must reach them without a key.
OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def bearer_refusal(value: str | None, keys: tuple[bytes, ...], *, missing: str, malformed: str) -> str | None:
    """Why an `authorization` value (gRPC metadata or the HTTP header) is refused; None when it carries one of
    `keys` as a bearer token. Every API checks keys here."""
    if not value:
        return missing
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return malformed
    given = token.strip().encode()
    # compare_digest against every key (no early exit) so timing does not reveal which prefix matched.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key)
    return None if ok else "invalid API key"


def client_id(authorization: str | None, peer: str) -> str:
    """Who a call is from, for per-client bounds in the compile pool: its API key (a digest) or its connection."""
    if authorization:
        return "key:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
    return "peer:" + peer


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only if it carries one of `keys` as a bearer token."""

    def __init__(self, keys: frozenset[str]):
        if not keys:
            raise ValueError("ApiKeyInterceptor needs at least one key (leave it out to disable auth)")
        self._keys = tuple(k.encode() for k in keys)

    def _authorized(self, metadata) -> tuple[bool, str]:
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        why = bearer_refusal(values[0] if values else None, self._keys,
                             missing="missing API key: send metadata 'authorization: Bearer <key>'",
                             malformed="malformed authorization metadata: expected 'Bearer <key>'")
        return why is None, why or ""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICE_PREFIXES):
            return handler
        ok, why = self._authorized(details.invocation_metadata)
        if ok:
            return handler
        return _denying(handler, why)


def _denying(handler: grpc.RpcMethodHandler, why: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED without running it."""

    async def deny_unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

    async def deny_stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)
        yield  # pragma: no cover  (makes this an async generator, as a server-streaming handler must be)

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny_unary, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny_unary, **kw)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kw)
