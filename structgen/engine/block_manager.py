"""BlockManager: the free list and reference counts of the paged KV pool's blocks.

A block is held by every sequence whose block table lists it and by the radix cache when a cache node
stores it. It returns to the free list when the last holder lets go. The manager knows nothing of tensors:
block ids index `KVCache.k/v[:, block]`.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable


class OutOfBlocksError(RuntimeError):
    """allocate() was asked for more blocks than are free (callers check `num_free` first)."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1:
            raise ValueError(f"the KV pool needs at least one block, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._ref = [0] * num_blocks
        # FIFO reuse: a freed block is reused last, which keeps recently freed KV around for debugging.
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` tokens."""
        return -(-num_tokens // self.block_size)

    def ref_count(self, block: int) -> int:
        return self._ref[block]

    def allocate(self, n: int) -> list[int]:
        """Take `n` free blocks, each with reference count 1 (held by the caller)."""
        if n < 0:
            raise ValueError(f"cannot allocate {n} blocks")
        if n > len(self._free):
            raise OutOfBlocksError(f"asked for {n} KV blocks, {len(self._free)} free")
        out = [self._free.popleft() for _ in range(n)]
        for b in out:
            self._ref[b] = 1
        return out

    def incref(self, blocks: Iterable[int]) -> None:
        for b in blocks:
            if self._ref[b] <= 0:
                raise ValueError(f"incref of free KV block {b}")
            self._ref[b] += 1

    def decref(self, blocks: Iterable[int]) -> int:
        """Drop one reference to each block; return how many became free."""
        freed = 0
        for b in blocks:
            r = self._ref[b]
            if r <= 0:
                raise ValueError(f"decref of free KV block {b} (double free)")
            self._ref[b] = r - 1
            if r == 1:
                self._free.append(b)
                freed += 1
        return freed
