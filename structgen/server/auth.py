"""API-key check as a grpc.aio interceptor: `authorization: Bearer KEY` metadata, UNAUTHENTICATED otherwise."""

from __future__ import annotations

import hmac
from typing import Awaitable, Callable

import grpc

# Health checks and reflection stay open: load balancers and grpcurl must reach them without a key.
OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only if it carries one of `keys` as a bearer token."""

    def __init__(self, keys: frozenset[str]):
        if not keys:
            raise ValueError("ApiKeyInterceptor needs at least one key (leave it out to disable auth)")
        self._keys = tuple(k.encode() for k in keys)

    def _authorized(self, metadata) -> tuple[bool, str]:
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            return False, "missing API key: send metadata 'authorization: Bearer <key>'"
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False, "malformed authorization metadata: expected 'Bearer <key>'"
        given = token.strip().encode()
        # compare_digest against every key (no early exit) so timing does not reveal which prefix matched.
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        return (True, "") if ok else (False, "invalid API key")

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
