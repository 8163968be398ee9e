"""JSON Schema -> a lazily built `ByteAutomaton` composed from the schema's structure.

`schema_automaton(schema, ...)` is the one entry point (see docs/INTERFACES.md). Layout:
normalize.py (refs, drafts, allOf merging) -> compiler.py (node graph) built from nodes.py, strings.py,
numbers.py, objects.py, arrays.py, formats.py -> matcher.py (lazy subset construction over the graph).
"""

from __future__ import annotations

import json
import sys

from ...errors import ConstraintTooComplexError, InvalidSchemaError
from ..limits import CompileLimits
from .compiler import Compiler
from .distinct import check_unique_placement
from .matcher import SchemaAutomaton
from .normalize import MAX_SCHEMA_NESTING, check_json_values

__all__ = ["schema_automaton", "SchemaAutomaton"]


def schema_automaton(schema, *, extra_properties: bool = False, whitespace: str = "compact",
                     max_recursion_depth: int = 3, max_states: int | None = None,
                     limits: CompileLimits | None = None, property_order: str = "schema") -> SchemaAutomaton:
    """The byte automaton of the JSON texts `schema` admits (dict, bool, or JSON text).

    extra_properties: False (default) = an object without `additionalProperties` admits no undeclared keys;
    True = the spec's meaning (undeclared keys with any value). whitespace: "compact" = none except one
    optional space after `,` and `:`; "flexible" = bounded spaces/newlines around punctuation.
    property_order: "schema" (default) = declared properties in `properties` order, extra keys after them;
    "any" = declared properties in any order (each at most once, required ones before the object closes), extra keys
    anywhere among them. The default keeps one order: fewer states, and outputs laid out as the schema reads.
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
    compiler = Compiler(schema, extra_properties=bool(extra_properties), whitespace=whitespace,
                        max_recursion_depth=max_recursion_depth, compile_timeout_s=limits.compile_timeout_s,
                        property_order=property_order)
    try:
        root = compiler.compile()
    except RecursionError:
        # NOTE: each schema level takes several Python frames (schema -> flat -> object -> value -> schema); a schema
        # within MAX_SCHEMA_NESTING can still unroll deeper than the interpreter's stack through $ref recursion
        raise ConstraintTooComplexError("compiler recursion depth", sys.getrecursionlimit()) from None
    if compiler.unique_arrays:
        check_unique_placement(root, compiler.unique_arrays)  # uniqueItems: checked by the cursor at run time
    return SchemaAutomaton(root, max_states=max_states, run_time_checks=bool(compiler.unique_arrays))
