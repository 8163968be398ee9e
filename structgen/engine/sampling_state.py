"""Per-sequence state of the sampling parameters that outlives a step: the log-probabilities of sampled tokens,
waiting for the delta that streams those tokens.

The runner records, for each logits row of a sequence that asked for logprobs, the row's sample at its output
position (row j of a sequence with n output tokens predicts position n + j). The engine commits a prefix of those
rows (accepted drafts, then the sample after them: at each committed position the committed token IS that row's
sample), so a delta's tokens find their records by position. Records of rows that were not committed (rejected
drafts) are overwritten by the next step, which samples the same positions again.

Prompt logprobs (GenerateRequest.prompt_logprobs_from) are recorded the same way, by prompt position, as the prefill
chunks compute them, and handed out once, on the first output that carries a token.

Kept off Sequence (a weak map keyed by the Sequence object) so sequence.py stays the scheduler's state only.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from .outputs import TokenLogprob

# position -> (token id, logprob, ((alternative id, logprob), ...))
_Record = tuple[int, float, tuple[tuple[int, float], ...]]


@dataclass
class _LogprobState:
    records: dict[int, _Record] = field(default_factory=dict)
    emitted: int = 0                    # output positions already handed out in deltas
    prompt: dict[int, _Record] = field(default_factory=dict)   # prompt position -> record
    prompt_taken: bool = False


_STATES: "weakref.WeakKeyDictionary[object, _LogprobState]" = weakref.WeakKeyDictionary()


def _state(seq) -> _LogprobState:
    st = _STATES.get(seq)
    if st is None:
        st = _STATES[seq] = _LogprobState()
    return st


def record(seq, position: int, token_id: int, logprob: float, top: tuple[tuple[int, float], ...]) -> None:
    """The runner's sample of `seq` at output `position` (overwrites an earlier sample there)."""
    _state(seq).records[position] = (token_id, logprob, top)


def record_prompt(seq, position: int, token_id: int, logprob: float, top: tuple[tuple[int, float], ...]) -> None:
    """The logprob of prompt token `token_id` at prompt `position` (> 0) of `seq` (a recompute overwrites it)."""
    _state(seq).prompt[position] = (token_id, logprob, top)


def take_prompt(seq, tokenizer) -> list[TokenLogprob | None] | None:
    """The prompt logprobs of `seq` from its request's prompt_logprobs_from on: once, on the first call after its
    first output token was committed; None before, after, and when the request did not ask for them. Entry 0 of
    the prompt (no logprob) and a position that was never recorded are None."""
    start = seq.request.prompt_logprobs_from
    if start is None or seq.num_output_tokens == 0:
        return None
    st = _state(seq)
    if st.prompt_taken:
        return None
    st.prompt_taken = True
    out: list[TokenLogprob | None] = []
    for pos in range(start, seq.prompt_len):
        rec = st.prompt.pop(pos, None)
        out.append(None if rec is None else TokenLogprob(
            token_id=rec[0], text=_text(tokenizer, rec[0]), logprob=rec[1],
            top=tuple((a, _text(tokenizer, a), alp) for a, alp in rec[2])))
    st.prompt.clear()
    return out


def take(seq, tokens: list[int], tokenizer) -> list[TokenLogprob] | None:
    """The TokenLogprobs of the next `tokens` of `seq`'s output (a delta's tokens: contiguous positions after the
    ones already taken), or None when the request did not ask for logprobs. A position without a record (never
    sampled by a logits row) reports logprob 0."""
    if not seq.sampling.logprobs:
        return None
    st = _state(seq)
    out = []
    for i, t in enumerate(tokens):
        rec = st.records.pop(st.emitted + i, None)
        lp, top = (rec[1], rec[2]) if rec is not None and rec[0] == t else (0.0, ())
        out.append(TokenLogprob(token_id=t, text=_text(tokenizer, t), logprob=lp,
                                top=tuple((a, _text(tokenizer, a), alp) for a, alp in top)))
    st.emitted += len(tokens)
    return out


def _text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id]) if tokenizer is not None else ""
