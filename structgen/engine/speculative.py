"""Speculative decoding under a constraint: propose a few tokens, verify them in one target forward.

Pieces (each testable without the engine):
- `constrain_draft`: walk the cursor along a draft, cut it where the constraint rejects it, fill one bitmask row
  per draft position plus the bonus position, roll the cursor back.
- `PromptLookup`: proposes the tokens that followed the latest earlier occurrence of the last n tokens in the
  prompt and output so far (extraction copies spans of its input).
- `greedy_verify` / `sample_verify`: given the target logits at every draft position (already masked with that
  position's row), accept the longest agreeing prefix and pick the token after it. Greedy: exact argmax match, so
  the output is token for token what plain decoding gives. Sampling: the standard acceptance rule
  (accept d with probability min(1, p(d)/q(d)), else draw from max(p - q, 0) renormalized), so the output follows
  the masked target distribution p whatever the proposer. A deterministic proposer (prompt lookup, a forced run)
  is the case q = one-hot(d).
- `AdaptiveDraftLength`: picks k from the acceptance rate seen so far.

The draft-model proposer lives in structgen/engine/draft_model.py (it needs the model and its own KV pool).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import torch


class DraftCursor(Protocol):
    """The part of the FSM cursor (docs/INTERFACES.md) drafts need."""

    def advance(self, token_id: int) -> bool: ...
    def rollback(self, n: int) -> None: ...
    def fill_bitmask(self, row) -> None: ...
    def is_terminated(self) -> bool: ...


@dataclass
class Draft:
    """Tokens proposed for one sequence this step.

    `token_ids[:num_forced]` come from a forced run, the rest from a proposer. `probs` is the proposer's
    distribution at each position, `(len(token_ids), V)` float32, or None for a deterministic proposer.
    """

    token_ids: list[int] = field(default_factory=list)
    num_forced: int = 0
    probs: torch.Tensor | None = None

    def __post_init__(self):
        if not 0 <= self.num_forced <= len(self.token_ids):
            raise ValueError(f"num_forced ({self.num_forced}) must be in [0, {len(self.token_ids)}]")
        if self.probs is not None and self.probs.shape[0] != len(self.token_ids):
            raise ValueError(f"probs has {self.probs.shape[0]} rows for {len(self.token_ids)} draft tokens")

    def __len__(self) -> int:
        return len(self.token_ids)

    def truncate(self, n: int) -> "Draft":
        n = max(0, min(n, len(self.token_ids)))
        return Draft(self.token_ids[:n], min(self.num_forced, n), None if self.probs is None else self.probs[:n])


# ---------------------------------------------------------------------------------------------------------------
# The constraint along a draft


def constrain_draft(cursor: DraftCursor | None, draft: Sequence[int], *, eos_token_ids: frozenset[int] = frozenset(),
                    bitmask_rows=None) -> int:
    """How many leading tokens of `draft` the constraint admits (stopping after an EOS). Cursor unchanged.

    bitmask_rows: None, or a `(>= n + 1, W)` int32 array/tensor; row i receives the mask at draft position i and
    row n the mask of the bonus position after the n admitted tokens. With no cursor (unconstrained request)
    the whole draft up to the first EOS is admitted and the rows are left alone (the caller fills them all-ones).
    """
    n = 0
    if cursor is None:
        for tok in draft:
            n += 1
            if tok in eos_token_ids:
                break
        return n
    try:
        for tok in draft:
            if bitmask_rows is not None:
                cursor.fill_bitmask(bitmask_rows[n])
            if not cursor.advance(tok):
                break
            n += 1
            if tok in eos_token_ids:
                break
        if bitmask_rows is not None:
            cursor.fill_bitmask(bitmask_rows[n])
    finally:
        if n:
            cursor.rollback(n)
    return n


# ---------------------------------------------------------------------------------------------------------------
# Prompt lookup


class PromptLookup:
    """N-gram index over one request's tokens (prompt, then output as it is committed).

    `propose(k)` matches the last n tokens (n from max_ngram down to min_ngram) against every earlier position
    and returns up to k tokens that followed the latest match; failing that, the last token's alias (its
    leading-space twin) as a 1-gram. Indexing is incremental: `extend` costs O(new
    tokens x ngram sizes), `propose` is a few dict lookups.
    """

    def __init__(self, context: Sequence[int], *, min_ngram: int = 1, max_ngram: int = 3,
                 aliases: Mapping[int, int] | None = None):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.min_ngram = min_ngram
        self.max_ngram = max_ngram
        # Last-token fallback (see `space_aliases`): a value copied into JSON starts without the space it had in
        # the text (`"New` after `":"`, ` New` in the document), so its token id never matches the document's.
        self.aliases = aliases if min_ngram == 1 else None
        self.tokens: list[int] = []
        # n -> {ngram: end}, where tokens[end - n:end] == ngram and end < len(tokens) (something followed it).
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(min_ngram, max_ngram + 1)}
        self.extend(context)

    def __len__(self) -> int:
        return len(self.tokens)

    def extend(self, new_tokens: Sequence[int]) -> None:
        """Append committed tokens (never drafts that may be rejected)."""
        toks = self.tokens
        old = len(toks)
        toks.extend(int(t) for t in new_tokens)
        # Ends old..len-1 now have a follower; the trailing ngram (end == len) is what we will look up.
        for end in range(max(old, 1), len(toks)):
            for n, index in self._index.items():
                if end >= n:
                    index[tuple(toks[end - n:end])] = end

    def propose(self, k: int, suffix: Sequence[int] = ()) -> list[int]:
        """Up to `k` tokens expected after `tokens + suffix` (suffix: uncommitted tokens, e.g. a forced run)."""
        if k <= 0:
            return []
        tail = self.tokens[-self.max_ngram:] + [int(t) for t in suffix]
        for n in range(min(self.max_ngram, len(tail)), self.min_ngram - 1, -1):
            end = self._index[n].get(tuple(tail[-n:]))
            if end is not None:
                return self.tokens[end:end + k]
        if self.aliases and tail:
            alias = self.aliases.get(tail[-1])
            end = None if alias is None else self._index[1].get((alias,))
            if end is not None:
                return self.tokens[end:end + k]
        return []


def space_aliases(token_bytes: Sequence[bytes]) -> dict[int, int]:
    """token id -> id of the same text with one leading space, for every token that has such a twin."""
    by_bytes = {b: i for i, b in enumerate(token_bytes) if b}
    out = {}
    for i, b in enumerate(token_bytes):
        if b and not b.startswith(b" "):
            twin = by_bytes.get(b" " + b)
            if twin is not None:
                out[i] = twin
    return out


# ---------------------------------------------------------------------------------------------------------------
# Verification (pure functions on tensors)


def allowed_from_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(R, W) int32 bitmask (structgen/fsm/bitmask.py contract) -> (R, vocab_size) bool, True = allowed."""
    ids = torch.arange(vocab_size, device=bitmask.device)                        # (V,)
    words = bitmask.to(torch.int64)[:, ids >> 5]                                 # (R, V) int64
    return ((words >> (ids & 31)) & 1).bool()                                    # (R, V)


def mask_logits(logits: torch.Tensor, bitmask: torch.Tensor | None) -> torch.Tensor:
    """Logits with disallowed tokens at -inf (a new tensor). logits (R, V) float; bitmask (R, W) int32 or None."""
    if bitmask is None:
        return logits.clone()
    allowed = allowed_from_bitmask(bitmask.to(logits.device), logits.shape[-1])  # (R, V) bool
    return logits.masked_fill(~allowed, float("-inf"))


def greedy_verify(masked_logits: torch.Tensor, drafts: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Greedy acceptance for a batch of drafts.

    masked_logits: (sum(len(d) + 1), V) float, rows of each sequence in order: one row per draft position (the
        logits that predict draft token i) and then the bonus row; already masked.
    Returns, per sequence, (number of draft tokens accepted, the token after them): the target's argmax at the
    first disagreement, or at the bonus row when every draft token agreed.
    """
    rows = sum(len(d) + 1 for d in drafts)
    if masked_logits.shape[0] != rows:
        raise ValueError(f"greedy_verify: {masked_logits.shape[0]} logits rows for drafts needing {rows}")
    choice = masked_logits.argmax(dim=-1).tolist()                               # (R,) one host sync
    out, r = [], 0
    for d in drafts:
        n = 0
        while n < len(d) and choice[r + n] == d[n]:
            n += 1
        out.append((n, choice[r + n]))
        r += len(d) + 1
    return out


def target_probs(masked_logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The distribution sampling draws from, per row: softmax(logits / T) restricted to top-k and top-p.

    masked_logits: (R, V) float (disallowed = -inf). Returns (R, V) float32 summing to 1 per row.
    """
    if temperature <= 0:
        raise ValueError("target_probs needs temperature > 0 (greedy requests use greedy_verify)")
    logits = masked_logits.float() / temperature                                 # (R, V)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]                   # (R, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)                                        # (R, V)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)                    # (R, V)
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it included).
        drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p                     # (R, V) bool
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample_verify(probs: torch.Tensor, draft: Sequence[int], draft_probs: torch.Tensor | None,
                  generator: torch.Generator | None = None) -> tuple[int, int]:
    """Speculative sampling for one sequence: (number of draft tokens accepted, the token after them).

    probs: (k + 1, V) float target distribution per position (masked, see `target_probs`).
    draft: k proposed tokens. draft_probs: (k, V) the proposer's distribution per position, or None when the
        proposer is deterministic (q = one-hot of the draft token).
    NOTE: draws come from `generator` (on probs' device) only, so a seeded request is reproducible.
    """
    k = len(draft)
    if probs.shape[0] != k + 1:
        raise ValueError(f"sample_verify: {probs.shape[0]} target rows for a draft of {k} (needs k + 1)")
    if draft_probs is not None and draft_probs.shape[0] != k:
        raise ValueError(f"sample_verify: {draft_probs.shape[0]} draft rows for a draft of {k}")
    probs = probs.float()
    if k:
        draft_t = torch.as_tensor(list(draft), dtype=torch.int64, device=probs.device)       # (k,)
        p_d = probs[:-1].gather(1, draft_t[:, None])[:, 0]                                   # (k,)
        if draft_probs is None:
            q_d = torch.ones_like(p_d)
        else:
            q_d = draft_probs.float().to(probs.device).gather(1, draft_t[:, None])[:, 0]     # (k,)
        ratio = torch.where(q_d > 0, p_d / q_d.clamp_min(1e-30), torch.zeros_like(p_d))      # (k,)
        u = torch.rand(k, generator=generator, device=probs.device)                          # (k,)
        accept = (u < ratio).tolist()
        for i in range(k):
            if accept[i]:
                continue
            if draft_probs is None:
                residual = probs[i].clone()
                residual[draft[i]] = 0.0
            else:
                residual = (probs[i] - draft_probs[i].float().to(probs.device)).clamp_min(0.0)  # (V,)
            if float(residual.sum()) <= 0.0:
                residual = probs[i]  # p <= q everywhere only when p == q: then the draft was always accepted
            token = torch.multinomial(residual, 1, generator=generator).item()
            return i, int(token)
    token = torch.multinomial(probs[k], 1, generator=generator).item()
    return k, int(token)


# ---------------------------------------------------------------------------------------------------------------
# Draft length


# (cost of one more forward row, of one more sequence) relative to a one-row forward, per device type, for
# AdaptiveDraftLength. CPU: measured (see its doc); CUDA: a decode step is memory-bound and rows are nearly free
# until large batches -- an estimate, not measured here.
DRAFT_COSTS = {"cpu": (0.05, 0.15), "cuda": (0.005, 0.02)}


class AdaptiveDraftLength:
    """Chooses k per request from the acceptance rate seen so far and the size of the batch it will verify in.

    The per-token acceptance rate a is tracked as an exponentially weighted ratio of accepted to judged draft
    tokens, so draft position i is accepted with probability about a^i. A step's cost, relative to a one-sequence
    one-row forward, is about 1 + cost_per_sequence * (B - 1) for B sequences (attention, KV, sampling: work per
    sequence) plus cost_per_token for each extra row (the matmuls). One more draft row yields a^i tokens in
    expectation against the B tokens the step makes anyway, so it raises throughput when
    a^i > B * cost_per_token / (1 + cost_per_sequence * (B - 1)). `k(batch_size)` is the longest draft whose every
    position clears that bar (0 when none does).

    Args:
        k_max: the largest draft (EngineConfig.num_speculative_tokens).
        cost_per_token: extra cost of one more row in a forward relative to a one-row forward.
        cost_per_sequence: extra cost of one more sequence (decoding one row) relative to a one-row forward.
        decay: weight kept by the history at each update.
        initial_rate: the acceptance rate assumed before any evidence. Low on purpose: the first draft of a
            request is then short (1 token in a batch of 8, 2 alone), and one accepted draft lifts a past 0.8 (prompt
            lookup averages about 0.5 on the extraction dev set, far more on copied spans).

    The CPU defaults come from SmolLM2-135M on 2 cores at 600 tokens of context (`benchmarks/bench_model_step.py
    --batches 1 8 --rows 1 2 4 --context 600 --no-hf`): one row ~70 ms, 8 sequences ~146 ms, +2.6-4 ms per extra
    row past 16. The bar is then 0.05 at batch 1, 0.19 at batch 8 and 0.29 at 32.
    """

    def __init__(self, k_max: int, *, cost_per_token: float = DRAFT_COSTS["cpu"][0],
                 cost_per_sequence: float = DRAFT_COSTS["cpu"][1], decay: float = 0.7, initial_rate: float = 0.3):
        if k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {k_max}")
        if cost_per_token < 0 or cost_per_sequence < 0:
            raise ValueError(f"costs must be >= 0, got {cost_per_token}, {cost_per_sequence}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if not 0.0 <= initial_rate <= 1.0:
            raise ValueError(f"initial_rate must be in [0, 1], got {initial_rate}")
        self.k_max = k_max
        self.cost_per_token = cost_per_token
        self.cost_per_sequence = cost_per_sequence
        self.decay = decay
        self._accepted = initial_rate
        self._judged = 1.0

    @property
    def acceptance_rate(self) -> float:
        return self._accepted / self._judged

    def update(self, proposed: int, accepted: int) -> None:
        """Record one verification: `accepted` of `proposed` draft tokens taken (forced tokens excluded)."""
        if proposed <= 0:
            return
        if not 0 <= accepted <= proposed:
            raise ValueError(f"accepted ({accepted}) must be in [0, proposed={proposed}]")
        judged = accepted + (1 if accepted < proposed else 0)  # tokens after the first rejection were not judged
        self._accepted = self.decay * self._accepted + accepted
        self._judged = self.decay * self._judged + judged

    def k(self, batch_size: int = 1) -> int:
        """Draft length for a step that verifies in a batch of `batch_size` sequences."""
        a = min(self.acceptance_rate, 0.999)
        b = max(batch_size, 1)
        bar = b * self.cost_per_token / (1.0 + self.cost_per_sequence * (b - 1))  # see the class doc
        k, p = 0, 1.0
        while k < self.k_max:
            p *= a
            if p <= bar:
                break
            k += 1
        return k
