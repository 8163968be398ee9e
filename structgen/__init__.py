"""structgen: constrained (JSON Schema / regex / choice) generation, served over gRPC."""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ConstraintError,
    ConstraintTooComplexError,
    InvalidRegexError,
    InvalidSchemaError,
    StructgenError,
    UnsupportedSchemaError,
)
from .tokenizer import Tokenizer, default_tokenizer  # noqa: E402


# Typed errors of the SDK (structgen/client/errors.py), mapped from gRPC status codes.
_CLIENT_ERRORS = ("RemoteError", "InvalidRequest", "InvalidConstraint", "NotFound", "Overloaded", "Unauthenticated",
                  "DeadlineExceeded", "Unavailable", "Cancelled", "ServerError", "ExtractionError")


def __getattr__(name):
    # The compiler API lives in structgen.fsm; import it lazily so `import structgen` stays cheap.
    if name in ("compile_json_schema", "compile_regex", "compile_choice", "CompiledConstraint"):
        from . import fsm

        return getattr(fsm, name)
    if name in ("Client", "AsyncClient"):
        from . import client

        return getattr(client, name)
    if name in _CLIENT_ERRORS:
        from .client import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'structgen' has no attribute {name!r}")


__all__ = [
    "__version__", "StructgenError", "ConstraintError", "InvalidSchemaError", "UnsupportedSchemaError",
    "InvalidRegexError", "ConstraintTooComplexError", "Tokenizer", "default_tokenizer",
    "compile_json_schema", "compile_regex", "compile_choice", "CompiledConstraint", "Client", "AsyncClient",
    *_CLIENT_ERRORS,
]
