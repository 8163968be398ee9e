"""Sampling parameters under their OpenAI names (and the extras vLLM / SGLang / llama.cpp clients send), and
SGLang's `sampling_params`, to one engine SamplingParams under the server's limits."""

from __future__ import annotations

from ...engine.requests import SamplingParams
from ..limits import resolve_max_tokens
from ..wire import invalid
from .body import Body

# Accepted and ignored: they change nothing here (output text is never split into special tokens we would skip;
# the server keeps no conversation state; usage is always returned).
IGNORED_OPENAI = ("user", "store", "metadata", "service_tier", "skip_special_tokens",
                  "spaces_between_special_tokens", "guided_decoding_backend", "guided_whitespace_pattern",
                  "include_stop_str_in_output", "echo")


def _stop(body: Body, name: str = "stop") -> tuple[str, ...]:
    stops = body.strings(name) or []
    for i, s in enumerate(stops):
        if not s:
            raise body.error(f"{name}[{i}]", "is an empty string")
    return tuple(stops)


def _logit_bias(body: Body, vocab_size: int) -> tuple[tuple[int, float], ...]:
    lb = body.object("logit_bias")
    if lb is None:
        return ()
    out = []
    for key, value in lb.data.items():
        try:
            token = int(key)
        except ValueError:
            raise lb.error(key, "is not a token id (logit_bias keys are token ids as strings)") from None
        if not 0 <= token < vocab_size:
            raise lb.error(key, f"is outside the vocabulary (token ids 0..{vocab_size - 1})")
        bias = lb.number(key, lo=-100, hi=100)
        out.append((token, float(bias)))
    return tuple(sorted(out))


def _params(**kw) -> SamplingParams:
    try:
        return SamplingParams(**kw)
    except ValueError as e:  # SamplingParams' messages start with the field's name
        raise invalid(str(e)) from None


def openai_sampling(body: Body, *, prompt_len: int, core, chat: bool, default_temperature: float = 1.0
                    ) -> SamplingParams:
    """OpenAI request fields (chat or legacy completions) as SamplingParams. OpenAI's default temperature is 1."""
    cfg = core.config
    engine = core.engine
    requested = body.integer("max_completion_tokens") if chat else None
    name = "max_completion_tokens"
    if requested is None:
        requested, name = body.integer("max_tokens"), "max_tokens"
    max_tokens = resolve_max_tokens(requested, prompt_len=prompt_len, max_model_len=engine.max_model_len,
                                    default_max_tokens=cfg.default_max_tokens, max_tokens_limit=cfg.max_tokens_limit,
                                    name=name)
    if chat:
        logprobs = bool(body.get("logprobs", bool, False))
        top_logprobs = body.integer("top_logprobs", 0, 0, 20)
        if top_logprobs and not logprobs:
            raise body.error("top_logprobs", "needs logprobs: true")
    else:  # legacy completions: logprobs is the number of alternatives (0 = the chosen token's only)
        n_lp = body.integer("logprobs", None, 0, 20)
        logprobs, top_logprobs = n_lp is not None, n_lp or 0
    seed = body.integer("seed")
    if seed is not None:
        seed %= 2**63  # OpenAI seeds may be negative; any integer is a valid seed
    return _params(
        temperature=body.number("temperature", default_temperature, 0, 2), top_p=body.number("top_p", 1.0, 0, 1) or 1.0,
        top_k=max(0, body.integer("top_k", 0, -1)), min_p=body.number("min_p", 0.0),
        seed=seed, max_tokens=max_tokens, stop=_stop(body), ignore_eos=bool(body.get("ignore_eos", bool, False)),
        frequency_penalty=body.number("frequency_penalty", 0.0), presence_penalty=body.number("presence_penalty", 0.0),
        repetition_penalty=body.number("repetition_penalty", 1.0),
        logit_bias=_logit_bias(body, engine.tokenizer.vocab_size),
        dry_multiplier=body.number("dry_multiplier", 0.0), dry_base=body.number("dry_base", 1.75),
        dry_allowed_length=body.integer("dry_allowed_length", 2),
        dry_range=body.integer("dry_range", body.integer("dry_penalty_last_n", 0, 0), 0),
        logprobs=logprobs, top_logprobs=top_logprobs, n=body.integer("n", 1, 1, 16))


def sglang_sampling(params: Body, *, prompt_len: int, core, logprobs: bool, top_logprobs: int
                    ) -> tuple[SamplingParams, bool]:
    """SGLang's sampling_params as SamplingParams; the bool says max_new_tokens was 0 (prefill only: the one
    token generated to run the prefill is not returned)."""
    cfg = core.config
    engine = core.engine
    requested = params.integer("max_new_tokens", None, 0)
    prefill_only = requested == 0
    max_tokens = resolve_max_tokens(1 if prefill_only else requested, prompt_len=prompt_len,
                                    max_model_len=engine.max_model_len, default_max_tokens=cfg.default_max_tokens,
                                    max_tokens_limit=cfg.max_tokens_limit, name="sampling_params.max_new_tokens")
    if params.integer("min_new_tokens", 0, 0):
        raise params.error("min_new_tokens", "is not supported (give 0)")
    # SGLang's frontend always sends these, empty: only a non-empty value asks for something we do not do.
    if params.data.get("stop_regex"):
        raise params.error("stop_regex", "is not supported; use stop strings or a regex constraint")
    if params.data.get("stop_token_ids"):
        raise params.error("stop_token_ids", "is not supported; use stop strings (the model's EOS always stops)")
    seed = params.integer("sampling_seed", params.integer("seed"))
    return _params(
        temperature=params.number("temperature", 1.0, 0), top_p=params.number("top_p", 1.0, 0, 1) or 1.0,
        top_k=max(0, params.integer("top_k", 0, -1)), min_p=params.number("min_p", 0.0),
        seed=None if seed is None else seed % 2**63, max_tokens=max_tokens, stop=_stop(params),
        ignore_eos=bool(params.get("ignore_eos", bool, False)),
        frequency_penalty=params.number("frequency_penalty", 0.0),
        presence_penalty=params.number("presence_penalty", 0.0),
        repetition_penalty=params.number("repetition_penalty", 1.0),
        logit_bias=_logit_bias(params, engine.tokenizer.vocab_size),
        dry_multiplier=params.number("dry_multiplier", 0.0), dry_base=params.number("dry_base", 1.75),
        dry_allowed_length=params.integer("dry_allowed_length", 2), dry_range=params.integer("dry_range", 0, 0),
        logprobs=logprobs, top_logprobs=top_logprobs, n=params.integer("n", 1, 1, 16)), prefill_only
