"""What a caller hands the engine: sampling parameters, a constraint, a request."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_KINDS = ("json_schema", "regex", "choice")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 = greedy; a seed makes sampling reproducible whatever the batch."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0                      # 0 = no top-k cut
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self):
        if isinstance(self.stop, (list, str)):
            # Accept a list (or one string) for convenience; store a tuple so the object stays hashable.
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) \
                or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be an integer in [0, 2**63) or None, got {self.seed!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class ConstraintSpec:
    """An uncompiled constraint: a JSON Schema (dict / bool / JSON text), a regex, or a list of choices."""

    kind: str
    value: Any
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"constraint kind must be one of {_KINDS}, got {self.kind!r}")
        if self.kind == "json_schema" and not isinstance(self.value, (dict, bool, str)):
            raise ValueError("a json_schema constraint needs a dict, a bool or JSON text as its value")
        if self.kind == "regex" and not isinstance(self.value, str):
            raise ValueError("a regex constraint needs a pattern string as its value")
        if self.kind == "choice" and (not isinstance(self.value, (list, tuple)) or not self.value
                                      or not all(isinstance(c, str) and c for c in self.value)):
            raise ValueError("a choice constraint needs a non-empty list of non-empty strings")
        if not isinstance(self.options, dict):
            raise ValueError("constraint options must be a dict")


@dataclass
class GenerateRequest:
    """One generation. `constraint` is a spec (compiled in the engine's pool), an already compiled
    constraint (anything with `.cursor()`), or None (unconstrained)."""

    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    constraint: Any = None
    speculation: bool | None = None     # None = the engine's setting

    def __post_init__(self):
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError("request_id must be a non-empty string")
        if not isinstance(self.prompt_token_ids, list) or not self.prompt_token_ids:
            raise ValueError(f"request {self.request_id}: prompt_token_ids must be a non-empty list of ints")
        if not isinstance(self.sampling, SamplingParams):
            raise TypeError(f"request {self.request_id}: sampling must be a SamplingParams")
        if self.constraint is not None and not isinstance(self.constraint, ConstraintSpec) \
                and not hasattr(self.constraint, "cursor"):
            raise TypeError(f"request {self.request_id}: constraint must be a ConstraintSpec, a compiled "
                            f"constraint or None, got {type(self.constraint).__name__}")
