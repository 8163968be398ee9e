"""One engine step's input to the model: the new tokens of every scheduled sequence, flattened, plus where their
keys/values go in the paged KV pool and which rows need logits. See docs/INTERFACES.md.

A sequence's row can be a plain decode (1 new token), a prefill chunk (many), or a verify row (a few draft tokens
whose logits are all needed). All kinds mix freely in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class ForwardBatch:
    input_ids: torch.Tensor  # (T,) int64, the new tokens of every sequence, concatenated in batch order
    positions: torch.Tensor  # (T,) int64, absolute position of each new token in its sequence
    query_lens: list[int]  # (B,) new tokens per sequence
    context_lens: list[int]  # (B,) tokens already in the KV cache before this step
    block_tables: torch.Tensor  # (B, max_blocks) int32, KV block ids per sequence, -1 padded
    slot_mapping: torch.Tensor  # (T,) int64, flat KV slot to write each new token's key/value
    logits_indices: torch.Tensor  # (N,) int64, rows of the T new tokens whose logits are returned

    def __post_init__(self):
        b = len(self.query_lens)
        if len(self.context_lens) != b or self.block_tables.shape[0] != b:
            raise ValueError(f"ForwardBatch: query_lens ({b}), context_lens ({len(self.context_lens)}) and "
                             f"block_tables ({self.block_tables.shape[0]}) must have one entry per sequence")
        t = sum(self.query_lens)
        if self.input_ids.shape != (t,) or self.positions.shape != (t,) or self.slot_mapping.shape != (t,):
            raise ValueError(f"ForwardBatch: input_ids, positions and slot_mapping must have shape ({t},) "
                             f"(sum of query_lens)")
        if any(q < 1 for q in self.query_lens) or any(c < 0 for c in self.context_lens):
            raise ValueError("ForwardBatch: every query_len must be >= 1 and every context_len >= 0")

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[0]

    @property
    def is_decode_only(self) -> bool:
        return all(q == 1 for q in self.query_lens)


def build_forward_batch(new_token_ids: Sequence[Sequence[int]], context_lens: Sequence[int],
                        block_tables: Sequence[Sequence[int]], block_size: int,
                        device: torch.device | str = "cpu",
                        num_logits: Sequence[int] | None = None) -> ForwardBatch:
    """Build a ForwardBatch from per-sequence Python lists.

    new_token_ids[i]: the tokens sequence i feeds this step; context_lens[i]: tokens of it already cached;
    block_tables[i]: its KV block ids, covering at least context_lens[i] + len(new_token_ids[i]) tokens;
    num_logits[i]: how many of its last new tokens need logits (default 1; 0 for a prefill chunk that is not
    the prompt's last, len(new_token_ids[i]) for a verify row).
    Tensors are built on the host and moved to `device` once each.
    """
    b = len(new_token_ids)
    if len(context_lens) != b or len(block_tables) != b:
        raise ValueError("build_forward_batch: new_token_ids, context_lens and block_tables must have equal length")
    if num_logits is None:
        num_logits = [1] * b
    if len(num_logits) != b:
        raise ValueError("build_forward_batch: num_logits must have one entry per sequence")
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    logits_rows: list[int] = []
    query_lens: list[int] = []
    for i in range(b):
        toks, ctx, table, nl = new_token_ids[i], int(context_lens[i]), block_tables[i], int(num_logits[i])
        q = len(toks)
        if q < 1:
            raise ValueError(f"sequence {i}: needs at least one new token")
        if ctx < 0:
            raise ValueError(f"sequence {i}: context_len must be >= 0, got {ctx}")
        if not 0 <= nl <= q:
            raise ValueError(f"sequence {i}: num_logits must be in [0, {q}], got {nl}")
        needed = -(-(ctx + q) // block_size)
        if len(table) < needed or any(blk < 0 for blk in table[:needed]):
            raise ValueError(f"sequence {i}: its block table covers {len(table)} blocks, needs {needed} valid ones "
                             f"for {ctx + q} tokens")
        start = len(ids)
        ids.extend(toks)
        for p in range(ctx, ctx + q):
            positions.append(p)
            slots.append(table[p // block_size] * block_size + p % block_size)
        logits_rows.extend(range(start + q - nl, start + q))
        query_lens.append(q)
    max_blocks = max((len(t) for t in block_tables), default=0)
    table = torch.full((b, max(max_blocks, 1)), -1, dtype=torch.int32)
    for i, t in enumerate(block_tables):
        if len(t):
            table[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.int32)
    return ForwardBatch(
        input_ids=torch.tensor(ids, dtype=torch.int64, device=device),
        positions=torch.tensor(positions, dtype=torch.int64, device=device),
        query_lens=query_lens,
        context_lens=[int(c) for c in context_lens],
        block_tables=table.to(device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        logits_indices=torch.tensor(logits_rows, dtype=torch.int64, device=device),
    )
