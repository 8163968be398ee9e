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
from ._lazy import lazy_getattr  # noqa: E402


# Typed errors of the SDK (structgen/client/errors.py), mapped from gRPC status codes.
_CLIENT_ERRORS = ("RemoteError", "InvalidRequest", "InvalidConstraint", "NotFound", "Overloaded", "Unauthenticated",
                  "DeadlineExceeded", "Unavailable", "Cancelled", "ServerError", "ExtractionError")


# The compiler API (structgen.fsm) and the SDK (structgen.client) load on first use: `import structgen` stays cheap.
__getattr__ = lazy_getattr(__name__, {
    **{name: "fsm" for name in ("compile_json_schema", "compile_regex", "compile_choice", "CompiledConstraint")},
    "Client": "client", "AsyncClient": "client",
    **{name: "client.errors" for name in _CLIENT_ERRORS},
})


__all__ = [
    "__version__", "StructgenError", "ConstraintError", "InvalidSchemaError", "UnsupportedSchemaError",
    "InvalidRegexError", "ConstraintTooComplexError", "Tokenizer", "default_tokenizer",
    "compile_json_schema", "compile_regex", "compile_choice", "CompiledConstraint", "Client", "AsyncClient",
    *_CLIENT_ERRORS,
]
