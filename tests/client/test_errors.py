"""gRPC status -> typed SDK error (structgen/client/errors.py)."""

from __future__ import annotations

import grpc
import pytest

import structgen
from structgen.client.errors import from_rpc_error


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code, details, metadata=()):
        self._code, self._details, self._md = code, details, metadata

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._md


@pytest.mark.parametrize("code, cls", [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, structgen.Overloaded),
    (grpc.StatusCode.UNAUTHENTICATED, structgen.Unauthenticated),
    (grpc.StatusCode.DEADLINE_EXCEEDED, structgen.DeadlineExceeded),
    (grpc.StatusCode.UNAVAILABLE, structgen.Unavailable),
    (grpc.StatusCode.NOT_FOUND, structgen.NotFound),
    (grpc.StatusCode.INVALID_ARGUMENT, structgen.InvalidRequest),
    (grpc.StatusCode.INTERNAL, structgen.ServerError),
])
def test_status_codes_map_to_typed_errors(code, cls):
    err = from_rpc_error(_FakeRpcError(code, "why"))
    assert type(err) is cls and err.code == code and "why" in str(err)


def test_constraint_errors_carry_keyword_pointer_position():
    md = (("structgen-error-kind", "constraint"), ("structgen-error-keyword", "not"),
          ("structgen-error-pointer", "#/items"), ("structgen-error-position", "4"))
    err = from_rpc_error(_FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad", md))
    assert isinstance(err, structgen.InvalidConstraint) and isinstance(err, structgen.ConstraintError)
    assert (err.keyword, err.pointer, err.position) == ("not", "#/items", 4)
