"""The limits one compile runs under, as one frozen value the caller passes down (api -> cache, json_schema, index).

`CompileLimits.from_env()` is the only place the fsm package reads them from the environment (through the
`structgen.settings` registry, which holds their defaults); everything below takes the object it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import settings


@dataclass(frozen=True)
class CompileLimits:
    """max_states: most automaton states one constraint may materialize (STRUCTGEN_MAX_STATES);
    compile_timeout_s: most seconds one constraint may spend compiling, or building one state's mask
    (STRUCTGEN_COMPILE_TIMEOUT_S). Going past either is a ConstraintTooComplexError.

    NOTE: limits decide whether a compile succeeds, never what it produces, so they are not part of the cache key;
    a remembered limit failure is retried once the limits differ (structgen.fsm.cache).
    """

    max_states: int
    compile_timeout_s: float

    @classmethod
    def from_env(cls) -> CompileLimits:
        """The limits the STRUCTGEN_* environment sets now (the registry's defaults where unset)."""
        return cls(max_states=settings.get("STRUCTGEN_MAX_STATES"),
                   compile_timeout_s=settings.get("STRUCTGEN_COMPILE_TIMEOUT_S"))
