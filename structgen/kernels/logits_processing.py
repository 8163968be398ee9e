"""Logits processing before the constraint mask: logit_bias, repetition / frequency / presence penalties and DRY,
batched over a step's logits rows.

The whole pipeline of a row, in order (this module does steps 1-3, the runner's bitmask step 4, sampling.py 5-7):
    1. logit_bias                 logits[t] += bias[t]
    2. repetition_penalty (HF/vLLM, over prompt + output): a seen token's logit l becomes l / p if l > 0 else l * p;
       then frequency / presence (OpenAI, over the output): logits[t] -= freq * count[t] + pres * (count[t] > 0)
    3. DRY (llama.cpp's "Don't Repeat Yourself", over the output only): see `dry_matches`; a token that would
       extend a repeat is NOT penalized when it copies the prompt: the last DRY_COPY_CONTEXT tokens of the repeat
       followed by it are a span of the prompt. Copying the document, even a second time (a name in a title and
       again in its own field, the same year in two dates), is what extraction does; only the tail is compared,
       because the repeat itself usually spans JSON syntax the prompt does not hold (`": "2023-0`). A loop is
       penalized where it leaves the prompt: at its seam, where the span's end is followed by its start again.
    4. the constraint mask        (runner: kernels.dispatch apply_token_bitmask)
    5. temperature                logits / T
    6. min_p, then top-k / top-p  (sampling.sample)
    7. the draw                   (sampling.sample: counter-based, batch independent)

"Output" for a row that verifies draft position j means the committed output followed by drafts[:j]: if the draft
is accepted those tokens are the output, so the row is processed exactly as plain decoding would process it.

Every feature is a sparse update of the (R, V) logits at the (row, token) entries it changes (cost ~ the tokens in
the histories, never R * V), run only when some row of the step uses it; a step where no row uses any feature
builds nothing (`LogitsProcessing.build` returns None). Rows that do not use a feature are not touched.

`reference_process_row` is the plain per-row implementation the tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

# DRY match lengths are counted up to this many tokens. Beyond it the penalty is multiplier * base^(cap - allowed):
# with the default base 1.75 and allowed length 2 that is ~1e7, a ban, so a longer match changes nothing but cost.
DRY_MAX_MATCH = 32
_DRY_CHUNK = 8                          # match positions compared per pass (early exit when no match goes on)
# A penalized continuation that, with this many tokens before it, appears in the prompt is a copy (see step 3).
DRY_COPY_CONTEXT = 3


@dataclass(frozen=True)
class RowHistory:
    """What one logits row's processing reads: its request's parameters (anything with SamplingParams' fields)
    and token histories. prompt: the prompt's ids; output: the output ids before this row's position (committed
    output + the drafts before this row)."""

    params: object
    prompt: Sequence[int]
    output: Sequence[int]


def _uses_penalties(p) -> bool:
    return p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 or p.repetition_penalty != 1.0


def row_needs_processing(p) -> bool:
    """Whether a request's parameters use any step of this module (cheap: the runner skips building otherwise)."""
    return bool(p.logit_bias) or _uses_penalties(p) or p.dry_multiplier != 0.0


def row_needs_history(p) -> bool:
    """Whether the row's token histories are read (logit_bias alone does not need them)."""
    return _uses_penalties(p) or p.dry_multiplier != 0.0


def _flat(rows_tokens: list[tuple[int, Sequence[int]]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """[(row, token ids)] -> (row index (T,), token id (T,)) int64 on `device` (numpy: histories are long lists)."""
    toks = [np.asarray(ts, dtype=np.int64) for _, ts in rows_tokens]
    rows = np.repeat(np.asarray([r for r, _ in rows_tokens], dtype=np.int64), [len(t) for t in toks])
    flat = np.concatenate(toks) if toks else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(rows).to(device), torch.from_numpy(flat).to(device)


@dataclass(frozen=True)
class LogitsProcessing:
    """One step's processing, every tensor on the logits' device; None fields are features no row uses.

    bias: (rows (E,), tokens (E,)) int64 and values (E,) float32 -- sparse logit_bias entries.
    freq, pres, rep: (R,) float32 (neutral 0, 0, 1); out_rows/out_tokens: (T,) int64 (row, token) of every output
    token of rows with freq/pres/rep; seen_rows/seen_tokens: (S,) int64, the same over prompt + output, rows with rep.
    dry_mult, dry_base: (R,) float32; dry_allowed: (R,) int64; dry_ctx: (R, L) int64 output ids right-aligned, -1
    before a row's start; dry_len: (R,) int64 the real length of each row's context."""

    num_rows: int
    bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    freq: torch.Tensor | None = None
    pres: torch.Tensor | None = None
    out_rows: torch.Tensor | None = None
    out_tokens: torch.Tensor | None = None
    rep: torch.Tensor | None = None
    seen_rows: torch.Tensor | None = None
    seen_tokens: torch.Tensor | None = None
    dry_mult: torch.Tensor | None = None
    dry_base: torch.Tensor | None = None
    dry_allowed: torch.Tensor | None = None
    dry_ctx: torch.Tensor | None = None
    dry_len: torch.Tensor | None = None
    dry_prompts: tuple | None = None    # (R,) per row: its prompt ids (None: no DRY); read only for penalized rows

    @classmethod
    def build(cls, rows: Sequence[RowHistory | None], device="cpu") -> "LogitsProcessing | None":
        """One entry per logits row; None (or parameters that use nothing) = a row left alone. Returns None when no
        row uses anything, so the default path builds and runs nothing."""
        used = [r is not None and row_needs_processing(r.params) for r in rows]
        if not any(used):
            return None
        n = len(rows)
        fields: dict = {}
        bias = [(i, t, b) for i, r in enumerate(rows) if used[i] for t, b in r.params.logit_bias]
        if bias:
            fields["bias"] = (torch.tensor([e[0] for e in bias], dtype=torch.int64, device=device),
                              torch.tensor([e[1] for e in bias], dtype=torch.int64, device=device),
                              torch.tensor([e[2] for e in bias], dtype=torch.float32, device=device))
        openai = [i for i in range(n) if used[i] and (rows[i].params.frequency_penalty != 0.0
                                                      or rows[i].params.presence_penalty != 0.0)]
        if openai:
            fields["freq"] = torch.tensor([rows[i].params.frequency_penalty if used[i] else 0.0 for i in range(n)],
                                          dtype=torch.float32, device=device)
            fields["pres"] = torch.tensor([rows[i].params.presence_penalty if used[i] else 0.0 for i in range(n)],
                                          dtype=torch.float32, device=device)
            fields["out_rows"], fields["out_tokens"] = _flat([(i, rows[i].output) for i in openai], device)
        rep = [i for i in range(n) if used[i] and rows[i].params.repetition_penalty != 1.0]
        if rep:
            fields["rep"] = torch.tensor([rows[i].params.repetition_penalty if used[i] else 1.0 for i in range(n)],
                                         dtype=torch.float32, device=device)
            fields["seen_rows"], fields["seen_tokens"] = _flat(
                [(i, list(rows[i].prompt) + list(rows[i].output)) for i in rep], device)
        dry = [i for i in range(n) if used[i] and rows[i].params.dry_multiplier != 0.0]
        if dry:
            ctxs = [[] for _ in range(n)]
            for i in dry:
                p, out = rows[i].params, rows[i].output
                ctxs[i] = list(out[-p.dry_range:]) if p.dry_range else list(out)
            width = max(2, max(len(c) for c in ctxs))
            fields["dry_ctx"] = torch.tensor([[-1] * (width - len(c)) + c for c in ctxs], dtype=torch.int64,
                                             device=device)
            fields["dry_len"] = torch.tensor([len(c) for c in ctxs], dtype=torch.int64, device=device)
            fields["dry_mult"] = torch.tensor([rows[i].params.dry_multiplier if i in dry else 0.0 for i in range(n)],
                                              dtype=torch.float32, device=device)
            fields["dry_base"] = torch.tensor([rows[i].params.dry_base if i in dry else 1.0 for i in range(n)],
                                              dtype=torch.float32, device=device)
            fields["dry_allowed"] = torch.tensor(
                [rows[i].params.dry_allowed_length if i in dry else 1 for i in range(n)], dtype=torch.int64,
                device=device)
            fields["dry_prompts"] = tuple(rows[i].prompt if i in dry else None for i in range(n))
        return cls(num_rows=n, **fields)

    def apply_(self, logits: torch.Tensor) -> torch.Tensor:
        """Steps 1-3 on logits (R, V) float32, in place (and returned). -inf entries stay -inf.

        Every step touches only the (row, token) entries it changes -- sparse updates of the flattened logits keyed
        by row * V + token -- so its cost grows with the tokens of the histories, not with R * V."""
        if logits.dim() != 2 or logits.shape[0] != self.num_rows or not logits.is_contiguous():
            raise ValueError(f"logits must be contiguous ({self.num_rows}, V), got {tuple(logits.shape)}")
        v = logits.shape[1]
        flat = logits.view(-1)  # (R * V,) a view: writes go to logits
        if self.bias is not None:
            rows, toks, vals = self.bias
            flat.index_add_(0, rows * v + toks, vals)
        if self.rep is not None:
            keys = torch.unique(self.seen_rows * v + self.seen_tokens)  # (U,) each seen (row, token) once
            x, p = flat[keys], self.rep[keys // v]
            flat[keys] = torch.where(x > 0, x / p, x * p)
        if self.freq is not None:
            keys, counts = torch.unique(self.out_rows * v + self.out_tokens, return_counts=True)  # (U,), (U,)
            row = keys // v
            flat.index_add_(0, keys, -(self.freq[row] * counts.float() + self.pres[row]))
        if self.dry_ctx is not None:
            match, nxt = dry_matches(self.dry_ctx, self.dry_len)  # (R, L-1) each
            allowed = self.dry_allowed[:, None]
            hit = match >= allowed  # (R, L-1): repeats long enough to penalize the token that followed them
            if bool(hit.any()):
                row = hit.nonzero()[:, 0]
                expo = (match - allowed)[hit].float()
                penalty = self.dry_mult[row] * torch.pow(self.dry_base[row], expo)  # (H,)
                # several repeats may precede the same token: the longest (largest penalty) counts, once
                keys, inverse = torch.unique(row * v + nxt[hit], return_inverse=True)  # (U,), (H,)
                worst = torch.zeros(keys.shape[0], dtype=penalty.dtype, device=penalty.device)
                worst.scatter_reduce_(0, inverse, penalty, reduce="amax")
                longest = torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device)
                longest.scatter_reduce_(0, inverse, match[hit], reduce="amax")  # (U,) the n of each penalty
                worst *= self._not_prompt_copies(keys, longest, v).to(worst.device)
                flat[keys] -= worst
        return logits


    def _not_prompt_copies(self, keys: torch.Tensor, longest: torch.Tensor, v: int) -> torch.Tensor:
        """(U,) float32: 0 where the penalty of key row * V + token is waived (the row's last min(`longest`,
        DRY_COPY_CONTEXT) output tokens followed by the token are a span of its prompt), else 1. Host work over
        the few penalized keys."""
        rows, toks, ns = (keys // v).tolist(), (keys % v).tolist(), longest.tolist()
        ctx = self.dry_ctx.cpu().numpy()  # (R, L) right-aligned
        prompts: dict[int, np.ndarray] = {}  # row -> its prompt as int64, converted only for rows with a penalty
        keep = [1.0] * len(rows)
        for u, (r, t, n) in enumerate(zip(rows, toks, ns)):
            if r not in prompts:
                prompts[r] = np.asarray(self.dry_prompts[r], dtype=np.int64)
            m = min(n, DRY_COPY_CONTEXT)
            if prompt_has_span(prompts[r], ctx[r, ctx.shape[1] - m:], t):
                keep[u] = 0.0
        return torch.tensor(keep, dtype=torch.float32)


def prompt_has_span(prompt: np.ndarray, tail: np.ndarray, token: int) -> bool:
    """Whether `tail` followed by `token` occurs contiguously in `prompt` (int64 arrays)."""
    n = len(tail)
    if prompt is None or len(prompt) <= n:
        return False
    ends = np.nonzero(prompt[n:] == token)[0] + n  # positions of `token` with room for the tail before it
    for e in ends.tolist():
        if np.array_equal(prompt[e - n:e], tail):
            return True
    return False


def dry_matches(ctx: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DRY repeats: for every earlier end position i of each row's context, the length of the longest match
    between the tokens ending at i and the context's tail (capped at DRY_MAX_MATCH; 0 = none), and the token
    that followed position i -- the token that would extend the repeat.

    ctx: (R, L) int64, each row's tokens right-aligned (the last column is the most recent token), -1 before the
    row's first token; lengths: (R,) int64, the real tokens per row. The earlier occurrence may overlap the tail.
    Returns (match (R, L-1) int64, next token (R, L-1) int64; 0 where match is 0 and the position is padding)."""
    r, width = ctx.shape
    k_max = DRY_MAX_MATCH
    pad = torch.full((r, k_max), -1, dtype=ctx.dtype, device=ctx.device)
    ctxp = torch.cat([pad, ctx], dim=1)  # (R, K + L)
    tail = ctx.flip(-1)  # (R, L): tail[:, k] = the k-th most recent token
    if width < k_max:
        tail = torch.cat([tail, pad[:, :k_max - width]], dim=1)
    ends = width - 1  # candidate end positions i in [0, L-2]: the token after them is ctx[i + 1]
    start = (width - lengths)[:, None]  # (R, 1) column of each row's first real token
    pos = torch.arange(ends, device=ctx.device)[None, :]  # (1, L-1)
    room = (pos - start + 1).clamp(min=0)  # (R, L-1): a match cannot reach before the row's start
    match = torch.zeros(r, ends, dtype=torch.int64, device=ctx.device)
    alive = room > 0
    for k0 in range(0, k_max, _DRY_CHUNK):
        for k in range(k0, k0 + _DRY_CHUNK):
            # ctx[i - k] for every end i (ctxp is shifted by K) against the k-th most recent token
            earlier = ctxp[:, k_max - k: k_max + ends - k]  # (R, L-1)
            alive = alive & (earlier == tail[:, k:k + 1]) & (room > k)
            match += alive.long()
        if not bool(alive.any()):
            break
    return match, ctx[:, 1:].clamp(min=0)


def dry_penalty_lengths(ctx: torch.Tensor, lengths: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The dense view of `dry_matches` (for tests and inspection): (R, V) int64, entry t = the longest repeat of
    the tail that t would extend (0 = none)."""
    match, nxt = dry_matches(ctx, lengths)
    out = torch.zeros(ctx.shape[0], vocab_size, dtype=torch.int64, device=ctx.device)
    return out.scatter_reduce_(1, nxt, match, reduce="amax")


def reference_process_row(logits: torch.Tensor, params, prompt: Sequence[int], output: Sequence[int]) -> torch.Tensor:
    """Steps 1-3 for one row, written plainly (per token loops): logits (V,) float32 -> a new (V,) tensor."""
    x = logits.clone()
    for t, b in params.logit_bias:
        x[t] += b
    if params.repetition_penalty != 1.0:
        p = params.repetition_penalty
        for t in set(prompt) | set(output):
            x[t] = x[t] / p if x[t] > 0 else x[t] * p
    if params.frequency_penalty != 0.0 or params.presence_penalty != 0.0:
        for t in set(output):
            x[t] -= params.frequency_penalty * list(output).count(t) + params.presence_penalty
    if params.dry_multiplier != 0.0:
        ctx = list(output[-params.dry_range:]) if params.dry_range else list(output)
        best: dict[int, int] = {}
        for i in range(len(ctx) - 1):  # an earlier occurrence ending at i, followed by ctx[i + 1]
            n = 0
            while n < min(i + 1, DRY_MAX_MATCH) and ctx[i - n] == ctx[len(ctx) - 1 - n]:
                n += 1
            best[ctx[i + 1]] = max(best.get(ctx[i + 1], 0), n)
        for t, n in best.items():
            m = min(n, DRY_COPY_CONTEXT)
            copies_prompt = any(list(prompt[e - m:e + 1]) == ctx[len(ctx) - m:] + [t]
                                for e in range(m, len(prompt)))
            if n >= params.dry_allowed_length and not copies_prompt:
                x[t] -= params.dry_multiplier * math.pow(params.dry_base, n - params.dry_allowed_length)
    return x
