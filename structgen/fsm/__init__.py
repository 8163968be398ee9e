"""Constraints -> token-level FSMs: languages (json_schema/, regex.py) build byte automata; the token layer
(vocab, index, cursor, bitmask) turns them into per-state token masks; api.py and cache.py are the front door.

Submodules are imported lazily so `import structgen.fsm` stays cheap and works before every language lands.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_EXPORTS = {
    "compile_json_schema": "api",
    "compile_regex": "api",
    "compile_choice": "api",
    "compile_constraint": "api",
    "compile_with_status": "api",
    "CompiledConstraint": "api",
    "Cursor": "cursor",
    "Vocabulary": "vocab",
    "TokenIndex": "index",
    "CompileCache": "cache",
    "default_cache": "cache",
    "ByteAutomaton": "automaton",
    "LiteralSetAutomaton": "automaton",
}


__getattr__ = lazy_getattr(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
