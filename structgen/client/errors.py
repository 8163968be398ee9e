"""Typed errors of the Python SDK, one per gRPC status the server uses, so callers `except` what they mean.

`InvalidConstraint` also derives from `structgen.ConstraintError`, so one `except ConstraintError` catches a
bad schema whether it was compiled locally or on a server.
"""

from __future__ import annotations

import grpc

from ..errors import ConstraintError, StructgenError


class RemoteError(StructgenError):
    """The server answered a call with an error status. `code` is the grpc.StatusCode, `details` its message."""

    def __init__(self, code: grpc.StatusCode, details: str, metadata: dict[str, str] | None = None):
        self.code = code
        self.details = details
        self.metadata = dict(metadata or {})
        super().__init__(f"{code.name}: {details}")


class InvalidRequest(RemoteError, ValueError):
    """INVALID_ARGUMENT about the request's parameters (max_tokens, prompt length, messages, ...)."""


class InvalidConstraint(InvalidRequest, ConstraintError):
    """INVALID_ARGUMENT about the constraint. `keyword`, `pointer` (JSON Schema) and `position` (regex) are
    set when the server names them."""

    def __init__(self, code, details, metadata=None):
        super().__init__(code, details, metadata)
        self.keyword = self.metadata.get("structgen-error-keyword")
        self.pointer = self.metadata.get("structgen-error-pointer")
        position = self.metadata.get("structgen-error-position")
        self.position = int(position) if position is not None else None


class NotFound(RemoteError, LookupError):
    """NOT_FOUND: e.g. a compiled constraint id this server does not know (compile it again)."""


class Overloaded(RemoteError):
    """RESOURCE_EXHAUSTED: the server's queue is full. Retry with backoff, or elsewhere."""


class Unauthenticated(RemoteError, PermissionError):
    """UNAUTHENTICATED: the API key is missing or wrong."""


class DeadlineExceeded(RemoteError, TimeoutError):
    """DEADLINE_EXCEEDED: the call's timeout passed; the server stopped the work."""


class Unavailable(RemoteError, ConnectionError):
    """UNAVAILABLE: the server is shutting down or cannot be reached. Safe to retry."""


class Cancelled(Unavailable):
    """CANCELLED: the call was cancelled.

    The SDK's blocking calls never cancel on their own, so a CANCELLED they see comes from the server side: a
    server in the last phase of shutdown cancels calls that arrive after its drain. For the caller that is the
    same as UNAVAILABLE (not served, safe to retry elsewhere), hence the subclass.
    """


class ServerError(RemoteError):
    """Any other status (INTERNAL, UNKNOWN, ...): a server-side failure."""


class BudgetClosedWarning(UserWarning):
    """`extract` returned a value that the token budget closed (finish reason "budget"): valid against the
    schema, but the model was cut short, so strings or lists may be shorter than the document's. Raise
    `max_tokens`, or turn it into an error with `warnings.simplefilter("error", BudgetClosedWarning)`."""


class ExtractionError(StructgenError, ValueError):
    """The server answered, but the output is not a usable value (e.g. cut off by max_tokens)."""


_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def from_rpc_error(err: grpc.RpcError) -> RemoteError:
    """The typed error for a failed call (works for sync and grpc.aio errors)."""
    code = err.code()
    details = err.details() or ""
    metadata = {k: v for k, v in (err.trailing_metadata() or ()) if isinstance(v, str)}
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        cls = InvalidConstraint if metadata.get("structgen-error-kind") == "constraint" else InvalidRequest
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        # gRPC's own message-size limit: the request is too big, retrying cannot help.
        cls = InvalidRequest
    else:
        cls = _BY_CODE.get(code, ServerError)
    return cls(code, details, metadata)
