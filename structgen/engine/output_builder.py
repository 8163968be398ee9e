"""What a step's committed tokens mean for a request's output: the finish rules (EOS, stop strings, a terminated
constraint, the token budget) and the GenerateOutput delta with its Usage and Timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import sampling_state
from .outputs import GenerateOutput, Timings, Usage
from .sequence import Sequence


@dataclass
class Verdict:
    """What `consume` found: the tokens to stream, and why the request ends (None: it goes on).

    reason "error" comes with `error`; then nothing is streamed."""

    visible: list[int] = field(default_factory=list)
    reason: str | None = None
    error: str | None = None


def consume(seq: Sequence, tokens: list[int], eos_token_ids: frozenset[int], max_model_len: int) -> Verdict:
    """Advance the cursor along the committed `tokens`, detokenize them, and check every finish condition.

    Mutates `seq`: its cursor and detokenizer; and when the output ends before the last of `tokens`, it drops the
    tokens past the end from seq.token_ids (plain decoding never runs those steps).
    """
    sp = seq.sampling
    visible = []
    reason = None
    for i, t in enumerate(tokens):
        try:
            ok = seq.cursor is None or seq.cursor.advance(t)
        except Exception as e:  # noqa: BLE001 - e.g. ConstraintTooComplexError on a lazily built state
            return Verdict(reason="error", error=f"{type(e).__name__}: {e}")
        if not ok:
            return Verdict(reason="error", error=f"internal error: token {t} was sampled against the constraint")
        if t in eos_token_ids and not sp.ignore_eos:
            reason = "stop"
        else:
            visible.append(t)
            seq.detokenizer.add((t,))
            if seq.detokenizer.stopped:
                reason = "stop"
            elif seq.cursor is not None and seq.cursor.is_terminated():
                reason = "stop"             # nothing but EOS can follow: plain decoding skips the EOS step
        if reason is not None:
            if i < len(tokens) - 1:
                # A verified draft ended the output and the same forward produced tokens past the end (the
                # bonus token after a drafted EOS, or the model's EOS). Plain decoding never runs those steps:
                # drop them, so that usage and token ids match decoding without drafts exactly.
                del seq.token_ids[len(seq.token_ids) - (len(tokens) - 1 - i):]
                seq.num_computed_tokens = min(seq.num_computed_tokens, seq.num_tokens)
            break
    if reason is None and (seq.num_output_tokens >= sp.max_tokens or seq.num_tokens >= max_model_len):
        reason = "length"
    if seq.cursor is not None and reason is not None:
        # Issue 13: a constrained output never ends with "length" nor outside a final state. The runner's budget
        # guard makes the budget run out only in a final state; "budget" says the budget closed the output.
        if reason == "length" and not seq.cursor.is_final():
            return Verdict(reason="error", error="internal error: the budget ran out outside a final state of "
                                                 "the constraint")
        if reason == "length" or seq.closed_by_budget:
            reason = "budget"
    return Verdict(visible, reason)


def stop_allowed(seq: Sequence, text: str, tokenizer) -> bool:
    """Whether a stop string may end `seq`'s output with `text` (the output text before the match).

    The rule for constrained requests (issue 13): a stop string ends the output only where the text before it is a
    complete match of the constraint -- the output stays valid; any other occurrence is ignored and decoding goes
    on. Checked by walking a fresh cursor over the tokens of `text` (the automaton reads bytes, so any tokenization
    of the text reaches the same state). Unconstrained requests (and those still compiling) stop at every match.
    """
    if seq.cursor is None:
        return True
    cursor = seq.cursor.copy()
    cursor.rollback(cursor.num_advanced)
    return all(cursor.advance(t) for t in tokenizer.encode(text)) and cursor.is_final()


def build_output(seq: Sequence, tokens: list[int], finished: bool) -> GenerateOutput:
    """One delta of `seq`: `tokens` and the text they complete, usage and timings as of now."""
    now = time.perf_counter()
    detok = seq.detokenizer
    text = detok.delta(final=finished) if detok is not None else ""
    tokenizer = getattr(detok, "tokenizer", None)
    return GenerateOutput(
        request_id=seq.request_id, token_ids=list(tokens), text=text, finished=finished,
        finish_reason=seq.finish_reason if finished else None, error=seq.error if finished else None,
        usage=Usage(prompt_tokens=seq.prompt_len, cached_tokens=seq.num_cached_prompt_tokens,
                    completion_tokens=seq.num_output_tokens, forced_tokens=seq.num_forced_tokens,
                    draft_accepted_tokens=seq.num_draft_accepted),
        timings=Timings(
            queued_s=(seq.first_scheduled_time or now) - seq.arrival_time,
            ttft_s=None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time,
            total_s=now - seq.arrival_time),
        # the delta's tokens' logprobs, recorded by the runner (None unless SamplingParams.logprobs)
        logprobs=sampling_state.take(seq, tokens, tokenizer),
        prompt_logprobs=sampling_state.take_prompt(seq, tokenizer),     # the first output with a token only
        stop_string=getattr(detok, "stop_string", None) if finished else None)
