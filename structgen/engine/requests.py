"""What a caller hands the engine: sampling parameters, a constraint, a request."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_KINDS = ("json_schema", "regex", "choice", "grammar")


# Every stop string is searched for after every token: bounded so that one request cannot slow the decoding loop.
MAX_STOP_STRINGS = 32
MAX_STOP_CHARS = 1024


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 = greedy; a seed makes sampling reproducible whatever the batch.
    Every default is neutral (plain greedy / sampling). The order the runner applies them in is written in
    structgen/kernels/logits_processing.py: logit_bias -> repetition/frequency/presence -> DRY -> constraint mask ->
    temperature -> min_p -> top-k/top-p -> the draw."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0                      # 0 = no top-k cut
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # OpenAI: logit -= frequency_penalty * count + presence_penalty * (count > 0), over the OUTPUT tokens so far.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # HF/vLLM: a token seen in prompt or output gets logit / p if positive, logit * p if not (1 = off).
    repetition_penalty: float = 1.0
    min_p: float = 0.0                  # drop tokens below min_p * the top token's probability (after temperature)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit); a dict is accepted
    # DRY (llama.cpp): the token that would extend a repeat of the output's recent tail, n tokens long, found
    # earlier IN THE OUTPUT (never the prompt: copying a prompt span is free), loses dry_multiplier *
    # dry_base ** (n - dry_allowed_length) when n >= dry_allowed_length. dry_range: last tokens searched (0 = all).
    dry_multiplier: float = 0.0         # 0 = off
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_range: int = 0
    logprobs: bool = False              # return the chosen tokens' log-probabilities (GenerateOutput.logprobs)
    top_logprobs: int = 0               # and that many most likely alternatives per token (0..20)
    n: int = 1                          # completions per request (fanned out by the server; the engine ignores it)

    def __post_init__(self):
        if isinstance(self.logit_bias, dict):
            object.__setattr__(self, "logit_bias", tuple(sorted(self.logit_bias.items())))
        elif isinstance(self.logit_bias, list):
            object.__setattr__(self, "logit_bias", tuple(tuple(e) for e in self.logit_bias))
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
        if len(self.stop) > MAX_STOP_STRINGS:
            raise ValueError(f"stop: at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
            if len(s) > MAX_STOP_CHARS:
                raise ValueError(f"stop: a stop string has at most {MAX_STOP_CHARS} characters, got {len(s)}")
        self._check_penalties()

    def _check_penalties(self) -> None:
        def number(name, lo, hi, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not (lo < v if lo_open else lo <= v) or not v <= hi:
                raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")

        number("frequency_penalty", -2.0, 2.0)         # OpenAI's range
        number("presence_penalty", -2.0, 2.0)
        number("repetition_penalty", 0.0, 10.0, lo_open=True)
        number("min_p", 0.0, 1.0)
        number("dry_multiplier", 0.0, 10.0)
        number("dry_base", 1.0, 8.0)
        for name, lo, hi in (("dry_allowed_length", 1, 64), ("dry_range", 0, 1 << 20), ("top_logprobs", 0, 20),
                             ("n", 1, 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        if not isinstance(self.logprobs, bool):
            raise ValueError(f"logprobs must be a bool, got {self.logprobs!r}")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=True")
        for e in self.logit_bias:
            if not (isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], int) and not isinstance(e[0], bool)
                    and e[0] >= 0 and isinstance(e[1], (int, float)) and math.isfinite(e[1])
                    and -100.0 <= e[1] <= 100.0):
                raise ValueError(f"logit_bias entries must be (token id >= 0, bias in [-100, 100]), got {e!r}")
        if len({t for t, _ in self.logit_bias}) != len(self.logit_bias):
            raise ValueError("logit_bias names a token id twice")

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
    # Prompt log-probabilities (SGLang's logprob_start_len): None = off; p = return, on the first output, the
    # logprob of every prompt token from position p on (GenerateOutput.prompt_logprobs). Positions from p on are
    # computed even when the prefix cache holds them.
    prompt_logprobs_from: int | None = None

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
        p = self.prompt_logprobs_from
        if p is not None and (isinstance(p, bool) or not isinstance(p, int)
                              or not 0 <= p < len(self.prompt_token_ids)):
            raise ValueError(f"request {self.request_id}: prompt_logprobs_from must be None or a prompt position in "
                             f"[0, {len(self.prompt_token_ids)}) (the prompt has {len(self.prompt_token_ids)} "
                             f"tokens), got {p!r}")
