"""The StructGen method handlers, registered so that bytes which are no valid request message get INVALID_ARGUMENT.

grpc answers a request its deserializer cannot parse with UNKNOWN ("Unexpected <class DecodeError>"), which says
nothing a person can act on. Here each handler's deserializer never raises: it hands the servicer a marker instead,
and the handler answers INVALID_ARGUMENT naming the message type.
"""

from __future__ import annotations

import inspect

import grpc

from .._proto import structgen_pb2_grpc as pb_grpc

SERVICE = "structgen.v1.StructGen"


class _Undecodable:
    """A request whose bytes did not parse as its message type."""

    __slots__ = ("type_name", "error")

    def __init__(self, type_name: str, error: Exception):
        self.type_name = type_name
        self.error = error

    @property
    def message(self) -> str:
        return (f"the request is not a valid {self.type_name} message ({type(self.error).__name__}: {self.error}); "
                f"send it with a structgen client or stubs generated from protos/structgen/v1/structgen.proto")


def _tolerant(deserializer):
    msg_type = getattr(deserializer, "__self__", None)
    type_name = getattr(getattr(msg_type, "DESCRIPTOR", None), "full_name", "request")

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as e:  # noqa: BLE001 - DecodeError, RuntimeWarning-as-error, ...: all the client's fault
            return _Undecodable(type_name, e)

    return parse


def _unary(behaviour):
    async def handle(request, context):
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await behaviour(request, context)

    return handle


def _stream(behaviour):
    if inspect.isasyncgenfunction(behaviour):
        async def handle_gen(request, context):
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for item in behaviour(request, context):
                yield item

        return handle_gen
    return _unary(behaviour)  # a coroutine that writes with context.write


class _Collector:
    """Stands in for a server to catch the generated handlers (add_StructGenServicer_to_server registers them)."""

    def __init__(self):
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers):
        pass

    def add_registered_method_handlers(self, service, handlers):
        self.handlers.update(handlers)


def add_servicer(servicer, server) -> None:
    """Register `servicer`'s methods on `server` as the generated code would, with tolerant request decoding."""
    collected = _Collector()
    pb_grpc.add_StructGenServicer_to_server(servicer, collected)
    handlers = {}
    for name, h in collected.handlers.items():
        parse = _tolerant(h.request_deserializer)
        if h.unary_unary is not None:
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                _unary(h.unary_unary), request_deserializer=parse, response_serializer=h.response_serializer)
        elif h.unary_stream is not None:
            handlers[name] = grpc.unary_stream_rpc_method_handler(
                _stream(h.unary_stream), request_deserializer=parse, response_serializer=h.response_serializer)
        else:  # no streaming-request methods in the service today
            handlers[name] = h
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
