"""What the engine hands back: streamed deltas with usage and timings, and engine-wide counters."""

from __future__ import annotations

from dataclasses import dataclass, field

# "budget" (issue 13): a constrained output the budget closed -- the engine restricted a sample to the tokens that
# still let the constraint finish in time, or the budget ran out in a final state. "length" is for unconstrained
# requests only: a constrained request always ends in a final state of its constraint (or with abort / error).
FINISH_REASONS = ("stop", "length", "budget", "abort", "error")


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0              # prompt tokens whose KV came from the prefix cache
    completion_tokens: int = 0
    forced_tokens: int = 0              # completion tokens appended without sampling (forced runs)
    draft_accepted_tokens: int = 0      # completion tokens accepted from speculative drafts


@dataclass
class Timings:
    queued_s: float = 0.0               # arrival -> first scheduled
    ttft_s: float | None = None         # arrival -> first output token
    total_s: float = 0.0                # arrival -> this delta


@dataclass(frozen=True)
class TokenLogprob:
    """One output token with its log-probability under the distribution it was drawn from: the model's logits
    after logit_bias, penalties, DRY, the constraint mask and temperature (greedy: temperature 1), before
    min_p/top-k/top-p. `top`: the most likely (token id, text, logprob) of that distribution, best first.
    (A prompt token's, GenerateOutput.prompt_logprobs, is under the model's raw logits instead.)"""

    token_id: int
    text: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass
class GenerateOutput:
    """One streamed delta. `text` is the new text only, never a split UTF-8 character."""

    request_id: str
    token_ids: list[int]
    text: str
    finished: bool = False
    finish_reason: str | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    logprobs: list[TokenLogprob] | None = None   # one per token_ids entry when SamplingParams.logprobs, else None
    # GenerateRequest.prompt_logprobs_from = p: on the request's first output with a token, one entry per prompt
    # position p .. len(prompt) - 1: prompt token i under log_softmax of the model's raw logits after tokens < i
    # (no logit processing, no constraint mask); `top` has SamplingParams.top_logprobs entries when
    # SamplingParams.logprobs, else none. Position 0 has no logprob: its entry is None. None on every other output.
    prompt_logprobs: list[TokenLogprob | None] | None = None
    # On the final output: the stop string (one of SamplingParams.stop) that ended the text; None when EOS, the
    # constraint, the budget or the length ended it.
    stop_string: str | None = None


@dataclass
class EngineStats:
    """Counters for metrics. Cumulative fields only grow; the rest are the current value."""

    queue_len: int = 0                  # waiting (including compiling) requests
    compiling: int = 0                  # requests whose constraint is still compiling
    running: int = 0
    kv_blocks_used: int = 0
    kv_blocks_free: int = 0
    kv_blocks_cached: int = 0           # blocks held only by the prefix cache (evictable)
    prefix_hit_tokens: int = 0          # cumulative prompt tokens served from the prefix cache
    prefill_tokens: int = 0             # cumulative tokens computed by forwards that were not decodes
    generated_tokens: int = 0           # cumulative output tokens
    forced_tokens: int = 0
    preemptions: int = 0
    steps: int = 0
    mask_time_s: float = 0.0            # cumulative time filling + applying bitmasks
    mask_time_per_step_s: float = 0.0   # mean over the steps that had a constrained row
    forward_time_s: float = 0.0
    tokens_per_s: float = 0.0           # output tokens per second over the recent window
    requests_finished: dict[str, int] = field(default_factory=dict)  # finish reason -> count
