"""Constraints -> token-level FSMs: languages (json_schema/, regex.py) build byte automata; the token layer
(vocab, index, cursor, bitmask) turns them into per-state token masks; api.py and cache.py are the front door.

Submodules are imported lazily so `import structgen.fsm` stays cheap and works before every language lands.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'structgen.fsm' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = sorted(_EXPORTS)
