"""The limits one compile runs under, as one frozen value the caller passes down (api -> cache, json_schema, index,
compile_pool).

`CompileLimits.from_env()` is the only place the fsm package reads them from the environment (through the
`structgen.settings` registry, which holds their defaults); everything below takes the object it is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import settings

# Defaults of the fields a caller may leave out (the registry's defaults are the same numbers).
DEFAULT_MAX_MEMORY_BYTES = 2048 << 20
DEFAULT_MAX_TABLE_BYTES = 512 << 20
DEFAULT_EXPAND_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CompileLimits:
    """max_states: most automaton states one constraint may materialize (STRUCTGEN_MAX_STATES);
    compile_timeout_s: most seconds one constraint may spend compiling, or building one state's mask
    (STRUCTGEN_COMPILE_TIMEOUT_S); max_memory_bytes: most resident memory of a compile worker process while it
    compiles (STRUCTGEN_COMPILE_MEMORY_MB; enforced where compiles run in worker processes, structgen.fsm.compile_pool);
    max_table_bytes: most bytes one constraint's token tables and masks may grow to, compile and decoding together
    (STRUCTGEN_MAX_TABLE_MB); expand_timeout_s: most seconds one state reached while decoding may take to build (its
    byte transitions, token mask or budget bound; STRUCTGEN_EXPAND_TIMEOUT_S): that work runs in the decoding loop,
    where every other request waits for it. Going past any is a ConstraintTooComplexError.

    NOTE: limits decide whether a compile succeeds, never what it produces, so they are not part of the cache key;
    a remembered limit failure applies while no limit is larger than the one it failed under (structgen.fsm.cache).
    """

    max_states: int
    compile_timeout_s: float
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES
    max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES
    expand_timeout_s: float = DEFAULT_EXPAND_TIMEOUT_S

    def __post_init__(self):
        if self.max_states < 1:
            raise ValueError(f"max_states must be >= 1, got {self.max_states}")
        if not self.compile_timeout_s >= 0:
            raise ValueError(f"compile_timeout_s must be >= 0, got {self.compile_timeout_s}")
        if self.max_memory_bytes < 1 or self.max_table_bytes < 1:
            raise ValueError("max_memory_bytes and max_table_bytes must be >= 1")
        if not self.expand_timeout_s > 0:
            raise ValueError(f"expand_timeout_s must be > 0, got {self.expand_timeout_s}")

    @classmethod
    def from_env(cls) -> CompileLimits:
        """The limits the STRUCTGEN_* environment sets now (the registry's defaults where unset)."""
        return cls(max_states=settings.get("STRUCTGEN_MAX_STATES"),
                   compile_timeout_s=settings.get("STRUCTGEN_COMPILE_TIMEOUT_S"),
                   max_memory_bytes=settings.get("STRUCTGEN_COMPILE_MEMORY_MB") << 20,
                   max_table_bytes=settings.get("STRUCTGEN_MAX_TABLE_MB") << 20,
                   expand_timeout_s=settings.get("STRUCTGEN_EXPAND_TIMEOUT_S"))

    def with_timeout(self, timeout_s: float) -> CompileLimits:
        """These limits with a shorter time limit (a request's deadline): what a failure under it is remembered as."""
        return dataclasses.replace(self, compile_timeout_s=max(min(self.compile_timeout_s, timeout_s), 1e-6))

    def covers(self, other: CompileLimits) -> bool:
        """True if every limit here is at least `other`'s: what failed under these fails under `other` too."""
        return (other.max_states <= self.max_states and other.compile_timeout_s <= self.compile_timeout_s
                and other.max_memory_bytes <= self.max_memory_bytes and other.max_table_bytes <= self.max_table_bytes
                and other.expand_timeout_s <= self.expand_timeout_s)
