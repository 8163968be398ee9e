"""RequestError (a gRPC status + message) in each HTTP API's own shape.

OpenAI: `{"error": {"message", "type", "param", "code"}}` with the status its SDK maps to an exception class
(400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 413, 429 RateLimitError, 5xx).
SGLang's native API: `{"error": {"message": ...}}` (what its own server answers), same status codes.
"""

from __future__ import annotations

import grpc

from ..wire import RequestError

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.DEADLINE_EXCEEDED: 408,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
}

_OPENAI_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 413: "invalid_request_error", 429: "rate_limit_error",
                499: "cancelled", 501: "not_implemented_error", 503: "service_unavailable"}

# Seconds a client should wait before retrying a 429 / 503 (sent as Retry-After).
RETRY_AFTER_S = 1


class HttpRefusal(RequestError):
    """A refusal that exists only over HTTP (413 body too large, 415 not JSON): a status without a gRPC twin."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)
        self.status = status
        self.error_code = code


def status_of(e: RequestError) -> int:
    return getattr(e, "status", None) or HTTP_STATUS.get(e.code, 500)


def _metadata(e: RequestError) -> dict[str, str]:
    return dict(e.metadata or ())


def error_code(e: RequestError) -> str:
    """A short machine-readable code: what kind of refusal this is."""
    if getattr(e, "error_code", None):
        return e.error_code
    md = _metadata(e)
    if md.get("structgen-error-kind") == "constraint":
        if "structgen-error-keyword" in md:
            return "unsupported_schema"
        if "structgen-error-position" in md:
            return "invalid_regex"
        if "structgen-error-pointer" in md:
            return "invalid_schema"
        return "invalid_constraint"
    return e.code.name.lower()


def error_param(e: RequestError, constraint_field: str | None = None) -> str | None:
    """The request field at fault: a constraint's JSON pointer goes after the field that held the constraint."""
    if getattr(e, "param", None):
        return e.param
    md = _metadata(e)
    if md.get("structgen-error-kind") == "constraint" and constraint_field:
        pointer = md.get("structgen-error-pointer")
        return constraint_field + (pointer if pointer and pointer != "#" else "")
    return None


def headers_of(e: RequestError) -> dict[str, str]:
    status = status_of(e)
    if status in (429, 503):
        retry = _metadata(e).get("retry-after-s", str(RETRY_AFTER_S))
        return {"Retry-After": retry}
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    return {}


def openai_error(e: RequestError, constraint_field: str | None = None) -> dict:
    status = status_of(e)
    return {"error": {"message": e.message, "type": _OPENAI_TYPE.get(status, "server_error"),
                      "param": error_param(e, constraint_field), "code": error_code(e)}}


def sglang_error(e: RequestError, constraint_field: str | None = None) -> dict:
    return {"error": {"message": e.message, "code": status_of(e), "param": error_param(e, constraint_field)}}
