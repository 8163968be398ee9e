"""JSON Schema -> a lazily built `ByteAutomaton` composed from the schema's structure.

`schema_automaton(schema, ...)` is the one entry point (see docs/INTERFACES.md). Layout:
normalize.py (refs, drafts, allOf merging) -> compiler.py (node graph) built from nodes.py, strings.py,
numbers.py, objects.py, arrays.py, formats.py -> matcher.py (lazy subset construction over the graph).
"""

from __future__ import annotations

import json

from ...errors import InvalidSchemaError
from ..limits import CompileLimits
from .compiler import Compiler
from .matcher import SchemaAutomaton
from .normalize import MAX_SCHEMA_NESTING, check_json_values

__all__ = ["schema_automaton", "SchemaAutomaton"]


def schema_automaton(schema, *, extra_properties: bool = False, whitespace: str = "compact",
                     max_recursion_depth: int = 3, max_states: int | None = None,
                     limits: CompileLimits | None = None) -> SchemaAutomaton:
    """The byte automaton of the JSON texts `schema` admits (dict, bool, or JSON text).

    extra_properties: False (default) = an object without `additionalProperties` admits no undeclared keys;
    True = the spec's meaning (undeclared keys with any value). whitespace: "compact" = none except one
    optional space after `,` and `:`; "flexible" = bounded spaces/newlines around punctuation.
    limits: the compile's limits (None = CompileLimits.from_env()); `max_states`, when given, overrides theirs.
    Raises InvalidSchemaError, UnsupportedSchemaError, ConstraintTooComplexError (structgen.errors).
    """
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise InvalidSchemaError(f"schema is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except RecursionError:
            raise InvalidSchemaError(f"schema nests deeper than {MAX_SCHEMA_NESTING} objects/arrays") from None
    if not isinstance(schema, (dict, bool)):
        raise InvalidSchemaError(f"a schema must be an object or a boolean, not {type(schema).__name__}")
    check_json_values(schema)
    if limits is None:
        limits = CompileLimits.from_env()
    if max_states is None:
        max_states = limits.max_states
    if not isinstance(max_states, int) or max_states < 1:
        raise ValueError("max_states must be a positive int")
    root = Compiler(schema, extra_properties=bool(extra_properties), whitespace=whitespace,
                    max_recursion_depth=max_recursion_depth,
                    compile_timeout_s=limits.compile_timeout_s).compile()
    return SchemaAutomaton(root, max_states=max_states)
