"""Lazy package exports (PEP 562): a package names what it exports and from which submodule, and the submodule is
imported on first access. Keeps `import structgen` (and the `structgen` command, which reads every subcommand's
flags) from loading torch, grpc or the compiler until they are used."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: `exports` maps a name to the submodule (relative to `package`, e.g.
    "api" or "client.errors") that defines it."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{module}", package), name)

    return __getattr__
