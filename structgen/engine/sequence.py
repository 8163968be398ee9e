"""Sequence: the engine's per-request state (tokens, KV blocks, constraint cursor, counters, timings).

Token accounting (the one invariant the scheduler and runner share):
    token_ids = prompt + committed output tokens
    token_ids[:num_computed_tokens] have KV in the blocks of block_table
    token_ids[num_computed_tokens:] are committed but not yet computed (the last sampled token, a forced run,
    or the rest of a prompt being prefilled in chunks)
    draft_tokens are proposed but not committed (issue 6): they go through the forward after the committed
    tokens, and their KV is dropped unless they are accepted.
"""

from __future__ import annotations

import enum
import time
from concurrent.futures import Future
from typing import Any

from .requests import GenerateRequest


class SequenceStatus(enum.Enum):
    WAITING = "waiting"                 # queued (or preempted), holds no KV blocks
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(self, request: GenerateRequest, eos_token_ids=frozenset(), arrival_time: float | None = None):
        self.request = request
        self.request_id = request.request_id
        self.sampling = request.sampling
        self.token_ids: list[int] = list(request.prompt_token_ids)
        self.prompt_len = len(self.token_ids)
        self.eos_token_ids = frozenset(eos_token_ids)
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.draft_tokens: list[int] = []
        # Radix cache bookkeeping: the node this sequence locks and how many of its pages are in the tree.
        self.cache_node: Any = None
        self.num_cached_pages = 0
        # Constraint: `cursor` once compiled; `compile_future` while compiling in the pool.
        self.cursor: Any = None
        self.compile_future: Future | None = None
        self.mask_words = 0             # bitmask words the constraint fills (ceil(its vocab / 32))
        # Issue 13: the output position of the first token the budget guard replaced (a restricted resample);
        # None while every sample fitted. A constrained output that keeps such a token ends with "budget".
        self.budget_restricted_at: int | None = None
        # Sampling draws are a pure function of (seed, output position); unseeded requests get one from the engine.
        self.seed = request.sampling.seed if request.sampling.seed is not None else 0
        self.detokenizer: Any = None
        # Counters (usage) and timings.
        self.num_cached_prompt_tokens = 0   # prompt tokens whose KV came from the prefix cache (first admission)
        self.num_prefilled_tokens = 0       # tokens this sequence pushed through forwards (recomputes included)
        self.num_forced_tokens = 0
        self.num_draft_accepted = 0
        self.num_preemptions = 0
        self.num_emitted_tokens = 0         # output tokens already streamed out
        self.arrival_time = time.perf_counter() if arrival_time is None else arrival_time
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.finish_time: float | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None

    # ----- derived -----
    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.prompt_len:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.prompt_len

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def constraint_pending(self) -> bool:
        """The constraint is still compiling: the sequence waits without blocking the queue."""
        return self.compile_future is not None and self.cursor is None and self.error is None

    def token_budget(self, max_model_len: int) -> int:
        """Output tokens this sequence may still commit: what max_tokens and the context leave (issue 13)."""
        return min(self.sampling.max_tokens - self.num_output_tokens, max_model_len - self.num_tokens)

    @property
    def closed_by_budget(self) -> bool:
        """A token the budget guard chose is part of the output (it was not cut off by an earlier end)."""
        return self.budget_restricted_at is not None and self.budget_restricted_at < self.num_output_tokens

    @property
    def last_token(self) -> int:
        return self.token_ids[-1]

    # ----- mutation -----
    def append_tokens(self, tokens: list[int]) -> None:
        self.token_ids.extend(tokens)

    def finish(self, reason: str, error: str | None = None) -> None:
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
        self.error = error
        self.finish_time = time.perf_counter()

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id!r}, {self.status.value}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})")
