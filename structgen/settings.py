"""The one typed registry of STRUCTGEN_* environment variables. Read through `settings.get(name)`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str], object]
    doc: str


def _path(v: str) -> Path:
    return Path(os.path.expanduser(v))


def _bool(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


REGISTRY: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("STRUCTGEN_CACHE_DIR", "~/.cache/structgen", _path,
                "Root of the converted-model cache and the on-disk compile cache."),
        Setting("STRUCTGEN_DISABLE_DISK_CACHE", "0", _bool, "Do not read or write the on-disk FSM cache."),
        Setting("STRUCTGEN_MAX_STATES", "200000", int,
                "Most automaton states one constraint may materialize before ConstraintTooComplexError."),
        Setting("STRUCTGEN_COMPILE_TIMEOUT_S", "30", float,
                "Most seconds one constraint may spend compiling or building one state's mask."),
        Setting("STRUCTGEN_COMPILE_MEMORY_MB", "2048", int,
                "Most resident memory (MiB) of a compile worker process; past it the worker is killed and the "
                "constraint fails as too complex."),
        Setting("STRUCTGEN_MAX_TABLE_MB", "512", int,
                "Most MiB one constraint's token tables and masks may grow to (compile and decoding together)."),
        Setting("STRUCTGEN_EXPAND_TIMEOUT_S", "5", float,
                "Most seconds one automaton state reached while decoding may take to build (transitions, token "
                "mask, budget bound); it runs in the decoding loop, so every other request waits for it."),
        Setting("STRUCTGEN_COMPILE_CACHE_MB", "256", int,
                "Byte budget (MiB) of the in-memory compile cache; the least recently used constraints leave first."),
        Setting("STRUCTGEN_CPU_KERNELS", "1", _bool,
                "Build and use the native CPU kernels (structgen/kernels/cpu_*.c: few-row matmul, decode/verify "
                "attention); 0 = torch only."),
        Setting("STRUCTGEN_NATIVE_MASKS", "1", _bool,
                "Build and use the native token-trie walker for masks (structgen/fsm/trie_walk.c); 0 = numpy only."),
        Setting("STRUCTGEN_NUM_THREADS", "0", int, "torch intra-op threads on CPU (0 = torch's default)."),
        Setting("STRUCTGEN_API_KEYS", "", str, "Comma-separated API keys the server accepts (empty = no auth)."),
        Setting("STRUCTGEN_API_KEY", "", str, "The API key `structgen extract` sends to a server (empty = none)."),
    ]
}


def get(name: str):
    """The parsed value of a registered STRUCTGEN_* variable (environment first, then the default)."""
    s = REGISTRY[name]
    return s.parse(os.environ.get(name, s.default))


def cache_dir() -> Path:
    p = get("STRUCTGEN_CACHE_DIR")
    p.mkdir(parents=True, exist_ok=True)
    return p
