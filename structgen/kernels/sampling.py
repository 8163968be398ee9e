"""Batched sampling: greedy, temperature, min-p, top-k, top-p, with per-request seeds that give the same token whatever
else is in the batch. (Drafts are verified by sampling each row with this sampler: structgen/engine/speculation/
verify.py.)

Randomness is counter-based: a row's uniform draw is a pure function of (seed, step, lane) computed by an integer
hash in torch ops, so it does not depend on the batch, on the device, or on any generator state. Each row is then
sampled by inverse CDF with its one uniform, over a row-local distribution:
- rows without top-k/top-p: softmax(logits / T) in vocabulary order;
- rows with top-k/top-p: the same, sorted by probability, truncated, renormalised.
Every row takes the same path alone or in any batch, so `same seed -> same token` holds by construction.

Order within a row (after the logits processing of logits_processing.py and the constraint mask): temperature ->
min_p (drop tokens whose probability is below min_p * the top probability) -> top-k -> top-p -> the draw.
Greedy rows take the argmax of the processed, masked logits; min_p/top-k/top-p never remove the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32), without int64 overflow (16-bit halves)."""
    lo = x & 0xFFFF
    hi = x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finalizer (xorshift-multiply), elementwise on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor, lane: int | torch.Tensor = 0) -> torch.Tensor:
    """(B,) float64 uniforms in [0, 1), a pure function of (seed, step, lane) per row.

    seeds: (B,) int64 (any value; both 32-bit halves are used); steps: (B,) int64 >= 0; lane: an int or a
    broadcastable int64 tensor (e.g. (B, K) for one draw per draft position)."""
    seeds = seeds.to(torch.int64)
    lo = seeds & _MASK32
    hi = (seeds >> 32) & _MASK32
    steps = steps.to(torch.int64) & _MASK32
    lane = torch.as_tensor(lane, dtype=torch.int64, device=seeds.device) & _MASK32
    if lane.dim() > 0 and lane.dim() > seeds.dim():
        lo, hi, steps = lo.unsqueeze(-1), hi.unsqueeze(-1), steps.unsqueeze(-1)
    h = _hash32(lo ^ 0x9E3779B9)
    h = _hash32(h ^ hi)
    h = _hash32(h ^ steps)
    h = _hash32(h ^ lane)
    h2 = _hash32(h ^ 0x85EBCA6B)
    # 53 random bits -> a double in [0, 1)
    return ((h << 21) ^ (h2 >> 11)).to(torch.float64) / float(1 << 53)


@dataclass(frozen=True)
class SamplingBatch:
    """Per-row sampling parameters, all (B,) tensors on the logits' device.

    temperature: float32, 0 = greedy; top_k: int64, 0 = off; top_p: float32 in (0, 1], 1 = off;
    seeds: int64; steps: int64, the row's output position (so every token of a request gets a fresh draw);
    min_p: float32 in [0, 1], 0 = off, or None when no row uses it."""

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    seeds: torch.Tensor
    steps: torch.Tensor
    min_p: torch.Tensor | None = None

    @property
    def num_rows(self) -> int:
        return self.temperature.shape[0]

    def select(self, rows) -> "SamplingBatch":
        """The parameters of `rows` (a list or (R',) int64 tensor of row indices), in that order: sampling a
        subset of a step's logits rows with `select` draws exactly what those rows draw in the full batch."""
        idx = torch.as_tensor(rows, dtype=torch.int64, device=self.temperature.device)
        return SamplingBatch(self.temperature[idx], self.top_k[idx], self.top_p[idx], self.seeds[idx],
                             self.steps[idx], None if self.min_p is None else self.min_p[idx])

    @classmethod
    def from_lists(cls, temperature, top_k, top_p, seeds, steps, device="cpu", min_p=None) -> "SamplingBatch":
        n = len(temperature)
        if min_p is not None and len(min_p) != n:
            raise ValueError("SamplingBatch.from_lists: every list needs one entry per row")
        if min_p is not None and any(not 0 <= m <= 1 for m in min_p):
            raise ValueError("min_p must be in [0, 1]")
        if not (len(top_k) == len(top_p) == len(seeds) == len(steps) == n):
            raise ValueError("SamplingBatch.from_lists: every list needs one entry per row")
        if any(t < 0 for t in temperature):
            raise ValueError("temperature must be >= 0")
        if any(k < 0 for k in top_k):
            raise ValueError("top_k must be >= 0 (0 = off)")
        if any(not 0 < p <= 1 for p in top_p):
            raise ValueError("top_p must be in (0, 1]")
        return cls(
            temperature=torch.tensor(temperature, dtype=torch.float32, device=device),
            top_k=torch.tensor(top_k, dtype=torch.int64, device=device),
            top_p=torch.tensor(top_p, dtype=torch.float32, device=device),
            seeds=torch.tensor([s & ((1 << 63) - 1) for s in seeds], dtype=torch.int64, device=device),
            steps=torch.tensor(steps, dtype=torch.int64, device=device),
            min_p=torch.tensor(min_p, dtype=torch.float32, device=device) if min_p is not None and any(min_p)
            else None,
        )


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """probs: (R, V) rows summing to ~1; u: (R,) in [0, 1). Index of the first cumulative mass > u * total."""
    cdf = probs.double().cumsum(dim=-1)  # (R, V) float64: exact enough that the last bucket is reachable
    target = (u * cdf[:, -1]).unsqueeze(-1)  # (R, 1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # never land on a zero-probability entry (u*total == total within rounding, or trailing zeros)
    return torch.minimum(idx, (probs > 0).long().cumsum(-1).argmax(-1))


def sample(logits: torch.Tensor, params: SamplingBatch) -> torch.Tensor:
    """logits: (B, V) float (already masked: -inf = forbidden). Returns (B,) int64 token ids.

    A row whose logits are all -inf has no legal token: that is the caller's bug (the FSM allows EOS in final
    states), so it raises ValueError rather than return garbage."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got {tuple(logits.shape)}")
    b = logits.shape[0]
    if params.temperature.shape != (b,):
        raise ValueError(f"sampling params have {params.temperature.shape[0]} rows, logits {b}")
    logits = logits.float()
    finite = torch.isfinite(logits).any(dim=-1)
    if not bool(finite.all()):
        raise ValueError(f"rows {torch.nonzero(~finite).view(-1).tolist()} have no allowed token (all -inf)")
    out = logits.argmax(dim=-1)  # greedy rows keep this
    rand = params.temperature > 0
    if not bool(rand.any()):
        return out
    u = uniform_noise(params.seeds, params.steps)  # (B,)
    if params.min_p is not None and bool((rand & (params.min_p > 0)).any()):
        # p_t < min_p * p_max  <=>  l_t / T < l_max / T + log(min_p)  <=>  l_t < l_max + T * log(min_p); a new tensor
        # (the caller's logits stay as they were). min_p = 0 gives -inf: nothing dropped.
        cut = logits.max(dim=-1).values + params.temperature * torch.log(params.min_p)  # (B,)
        logits = logits.masked_fill(rand[:, None] & (logits < cut[:, None]), float("-inf"))
    filt = rand & ((params.top_k > 0) | (params.top_p < 1))
    plain = rand & ~filt
    if bool(plain.any()):
        rows = plain.nonzero().view(-1)
        probs = torch.softmax(logits[rows] / params.temperature[rows, None], dim=-1)  # (R, V)
        out[rows] = _inverse_cdf(probs, u[rows])
    if bool(filt.any()):
        rows = filt.nonzero().view(-1)
        scaled = logits[rows] / params.temperature[rows, None]  # (R, V)
        sorted_logits, order = scaled.sort(dim=-1, descending=True, stable=True)  # (R, V)
        rank = torch.arange(scaled.shape[1], device=scaled.device)  # (V,)
        k = params.top_k[rows]
        keep = (k[:, None] == 0) | (rank[None, :] < k[:, None])  # (R, V) top-k
        sorted_logits = sorted_logits.masked_fill(~keep, float("-inf"))
        probs = torch.softmax(sorted_logits, dim=-1)  # (R, V) renormalised after top-k
        before = probs.cumsum(dim=-1) - probs  # mass strictly above each entry
        keep = before < params.top_p[rows, None]  # the smallest prefix reaching top_p (first entry always kept)
        probs = probs.masked_fill(~keep, 0.0)
        pick = _inverse_cdf(probs, u[rows])  # (R,) rank in sorted order
        out[rows] = order.gather(1, pick[:, None]).squeeze(1)
    return out
