"""DraftModelProposer: a smaller model of the same tokenizer proposes up to k greedy tokens per sequence, batched.

Per engine step, once every sequence has committed its verified tokens (structgen/engine/speculation/drafter.py
calls `propose` once with every drafting sequence):
1. catch-up: one extend forward of the draft model over what each sequence committed since its last draft, plus
   the uncommitted prefix the draft continues (a forced run); its last logits give the first draft token;
2. k - 1 decode forwards, each feeding every sequence still drafting its previous draft token.
Each step's logits are masked with the sequence's constraint (the mask after the prefix and the draft so far,
from Cursor.fill_along: the cursor ends where it started) and the draft token is the argmax. A draft stops at EOS,
where the constraint allows nothing, or at k tokens.

NOTE: proposals are greedy, i.e. a deterministic function of the committed prefix (q = one-hot). The engine
verifies a deterministic draft by sampling each target row and accepting while the sample equals the draft, which
is exactly the speculative acceptance rule for a one-hot q: greedy requests get plain decoding's tokens, sampled
requests keep the masked target distribution. Sampling the draft model instead would need q's probabilities in the
verification (structgen/engine/speculation/verify.py); keep the proposals greedy unless that is wired too.

KV: the draft model has its own paged pool and BlockManager. Per sequence it records what its KV holds: the first
`num_committed` tokens of seq.token_ids, then `speculative` tokens fed beyond them (a forced run, drafts). At the
next call the valid prefix is num_committed plus the part of `speculative` the sequence went on to commit; KV past
it is simply overwritten. A sequence that cannot get blocks does not draft that step (never an error). Blocks go
back on `release` (the engine calls it when a request finishes or aborts) and, as a safety net, for every tracked
sequence that is no longer running (finished, preempted) at the start of each call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence as Seq

import torch

from ...kernels.dispatch import backends_for
from ..block_manager import BlockManager
from ..forward_batch import build_forward_batch
from ..kv_cache import KVCache
from ..mask_buffer import MaskBuffer
from ..sequence import Sequence, SequenceStatus
from .proposer import DraftRequest

# Tokens the catch-up forward may process in one call (a new sequence's whole prompt goes through it once);
# sequences past the budget catch up in chunks over the next steps and do not draft meanwhile.
MAX_CATCHUP_TOKENS = 4096


def check_draft_vocab(draft_vocab_size: int, target_vocab_size: int, tokenizer_vocab_size: int) -> None:
    """Raise ValueError unless a draft model with `draft_vocab_size` logits can draft for the target.

    Equal sizes pass; so do embedding tables padded differently past the tokenizer's ids (drafts are then kept
    to ids both models score)."""
    if draft_vocab_size == target_vocab_size:
        return
    if min(draft_vocab_size, target_vocab_size) >= tokenizer_vocab_size:
        return
    raise ValueError(
        f"the draft model scores {draft_vocab_size} token ids but the target model {target_vocab_size} (its "
        f"tokenizer has {tokenizer_vocab_size}): a draft model must use the target's tokenizer "
        f"(e.g. SmolLM2-135M for a larger SmolLM2)")


def default_draft_kv_bytes(target_kv: KVCache, draft_config, dtype: torch.dtype) -> int:
    """Draft KV budget: room for as many tokens as the target's pool, but at most a quarter of its bytes.

    A draft model a tenth of the target's size then never runs short; a draft as large as the target (tests,
    self-drafting) gets a quarter of the tokens."""
    target_bytes = target_kv.k.numel() * target_kv.k.element_size() * 2
    per_block = KVCache.bytes_per_block(draft_config, target_kv.block_size, dtype)
    return max(per_block, min(target_kv.num_blocks * per_block, target_bytes // 4))


@dataclass
class _DraftKV:
    block_table: list[int] = field(default_factory=list)
    num_committed: int = 0              # leading tokens of seq.token_ids whose KV is in the draft pool
    speculative: list[int] = field(default_factory=list)   # tokens whose KV follows them (maybe rejected since)

    def valid_len(self, token_ids: Seq[int]) -> int:
        n = self.num_committed
        for t in self.speculative:
            if n >= len(token_ids) or token_ids[n] != t:
                break
            n += 1
        return n

    @property
    def num_cached(self) -> int:
        return self.num_committed + len(self.speculative)


class _Row:
    """A sequence drafting in this call (host-side bookkeeping)."""

    __slots__ = ("index", "seq", "st", "cursor", "k", "prefix", "draft", "done")

    def __init__(self, index: int, seq: Sequence, st: _DraftKV, k: int, prefix: list[int]):
        self.index, self.seq, self.st, self.k = index, seq, st, k
        self.cursor = seq.cursor
        self.prefix = prefix            # uncommitted tokens before the draft (a forced run)
        self.draft: list[int] = []
        self.done = False


class DraftModelProposer:
    """Owns the draft model's KV pool and per-sequence block tables; `propose` drafts for a batch of sequences.

    Args:
        model: a LlamaModel (structgen/engine/model.py) on the target's device.
        target_vocab_size / tokenizer_vocab_size: checked against the draft's vocabulary (ValueError if it
            cannot be the same tokenizer).
        kv_cache_bytes: the draft KV pool's size (see `default_draft_kv_bytes`).
        block_size: tokens per draft KV block.
        max_num_seqs: rows of the preallocated host mask buffer (grown if ever exceeded).
    Not thread-safe: the engine's loop thread calls it.
    """

    def __init__(self, model, *, target_vocab_size: int, tokenizer_vocab_size: int, eos_token_ids,
                 kv_cache_bytes: int, block_size: int, max_num_seqs: int = 64,
                 max_catchup_tokens: int = MAX_CATCHUP_TOKENS):
        check_draft_vocab(model.config.vocab_size, target_vocab_size, tokenizer_vocab_size)
        self.model = model
        self.device = model.device
        self.eos_token_ids = frozenset(eos_token_ids)
        # Drafts are kept to ids the target scores too (padded embedding rows are never real tokens).
        self.vocab_limit = min(model.config.vocab_size, target_vocab_size)
        self.num_words = -(-self.vocab_limit // 32)
        self.kv = KVCache.from_budget(model.config, kv_cache_bytes, block_size, model.device, model.dtype)
        self.block_manager = BlockManager(self.kv.num_blocks, block_size)
        self.max_catchup_tokens = max_catchup_tokens
        self._states: dict[Sequence, _DraftKV] = {}
        self._masks = MaskBuffer(max_num_seqs, self.num_words, self.device)   # a call fills rows [0, B)
        # Counters.
        self.num_forwards = 0
        self.proposed_tokens = 0

    @property
    def num_tracked(self) -> int:
        return len(self._states)

    def release(self, seq: Sequence) -> None:
        """Give back `seq`'s draft KV blocks (a no-op for a sequence without any)."""
        st = self._states.pop(seq, None)
        if st is not None and st.block_table:
            self.block_manager.decref(st.block_table)

    def _sweep(self) -> None:
        for seq in [s for s in self._states if s.status is not SequenceStatus.RUNNING]:
            self.release(seq)

    # ----- the step -----
    @torch.inference_mode()
    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        """Draft tokens for each request (possibly none), in order. Cursors end where they started."""
        self._sweep()
        out: list[list[int]] = [[] for _ in requests]
        bm, bs = self.block_manager, self.kv.block_size
        budget = self.max_catchup_tokens
        feeds, ctxs, tables, logits_rows = [], [], [], []
        rows: list[_Row] = []               # drafting sequences, in batch order of their logits rows
        for i, r in enumerate(requests):
            seq = r.seq
            if r.k <= 0 or budget <= 0 or seq.is_finished:
                continue
            st = self._states.get(seq)
            if st is None:
                st = self._states[seq] = _DraftKV()
            valid = st.valid_len(seq.token_ids)
            committed = seq.token_ids[valid:]
            feed = committed + list(r.prefix)
            if not feed:
                continue                    # nothing new since the last draft: the engine always commits a token
            # Positions fed: valid .. valid + len(feed) - 1, then the first k - 1 draft tokens.
            k = min(r.k, self.model.max_positions + 1 - (valid + len(feed)))
            drafting = k > 0 and len(feed) <= budget
            if not drafting:
                feed = committed[:budget]   # catch up a chunk (committed tokens only); draft on a later step
                if not feed or valid + len(feed) > self.model.max_positions:
                    continue
            need = bm.blocks_for(valid + len(feed) + (k - 1 if drafting else 0)) - len(st.block_table)
            if need > bm.num_free:
                continue                    # no draft KV to spare: this sequence does not draft this step
            if need > 0:
                st.block_table.extend(bm.allocate(need))
            budget -= len(feed)
            n_committed = min(len(feed), len(committed))
            st.num_committed = valid + n_committed
            st.speculative = feed[n_committed:]
            feeds.append(feed)
            ctxs.append(valid)
            tables.append(st.block_table)
            logits_rows.append(1 if drafting else 0)
            if drafting:
                rows.append(_Row(i, seq, st, k, list(r.prefix)))
        if not feeds:
            return out

        batch = build_forward_batch(feeds, ctxs, tables, bs, self.device, num_logits=logits_rows)
        logits = self.model(batch, self.kv)                  # (len(rows), V) float32
        self.num_forwards += 1
        if rows:
            self._pick(logits, rows)
        while True:
            active = [row for row in rows if not row.done]
            if not active:
                break
            batch = build_forward_batch([[row.draft[-1]] for row in active],
                                        [row.st.num_cached for row in active],
                                        [row.st.block_table for row in active], bs, self.device)
            for row in active:
                row.st.speculative.append(row.draft[-1])
            logits = self.model(batch, self.kv)              # (len(active), V) float32
            self.num_forwards += 1
            self._pick(logits, active)
        for row in rows:
            out[row.index] = row.draft
            self.proposed_tokens += len(row.draft)
        return out

    def _pick(self, logits: torch.Tensor, rows: list[_Row]) -> None:
        """Mask each row's logits with its constraint, take the argmax, extend the drafts, mark finished rows.

        logits: (len(rows), V_draft) float32 on the draft model's device; rows already done are skipped."""
        n = len(rows)
        if n > self._masks.num_rows:
            self._masks = MaskBuffer(max(n, 2 * self._masks.num_rows), self.num_words, self.device)
        logits = logits[:, :self.vocab_limit]                                 # (n, V) view
        buf = self._masks.np
        constrained = False
        for j, row in enumerate(rows):
            cursor = row.cursor
            if cursor is None or row.done:
                buf[j] = -1
                continue
            walk = row.prefix + row.draft
            try:
                w = min(row.seq.mask_words or self.num_words, self.num_words)
                if cursor.fill_along(walk, buf[j:j + 1, :w], start=len(walk)) < len(walk):
                    # Only the prefix can be rejected (each draft token was picked under its mask): the caller's
                    # invariant broke; this sequence does not draft.
                    row.done = True
                    buf[j] = -1
                    continue
                buf[j, w:] = 0
                constrained = True
            except Exception:  # noqa: BLE001 - e.g. ConstraintTooComplexError: the engine fails it on its own
                # The state after the draft so far cannot be built or masked, and the runner would fill that
                # state's row for the bonus token: drop the last draft token so that every verified row can be filled.
                if row.draft:
                    row.draft.pop()
                row.done = True
                buf[j] = -1
        if constrained:
            backends_for(self.device).apply_token_bitmask(logits, self._masks.on_device(n))
        best, ids = logits.max(dim=-1)                                        # (n,), (n,)
        picks = ids.masked_fill(~torch.isfinite(best), -1).tolist()          # one host sync; -1 = none allowed
        for row, tok in zip(rows, picks):
            if row.done:
                continue
            if tok < 0:
                row.done = True
                continue
            row.draft.append(tok)
            if tok in self.eos_token_ids or len(row.draft) >= row.k:
                row.done = True
