"""The paged KV pool: two preallocated tensors of fixed-size blocks that every sequence's keys/values live in.

Block ids are handed out by the engine's block manager; this module only owns the tensors. A token at absolute
position p of a sequence lives in block `block_table[p // block_size]` at offset `p % block_size`, i.e. at the flat
slot `block * block_size + offset` of `k[layer].view(-1, n_kv_heads, head_dim)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model_config import ModelConfig


@dataclass
class KVCache:
    k: torch.Tensor  # (num_layers, num_blocks, block_size, n_kv_heads, head_dim)
    v: torch.Tensor  # (num_layers, num_blocks, block_size, n_kv_heads, head_dim)
    block_size: int

    def __post_init__(self):
        if self.k.shape != self.v.shape or self.k.dim() != 5:
            raise ValueError(f"KVCache: k and v must have the same 5-d shape, got {tuple(self.k.shape)} "
                             f"and {tuple(self.v.shape)}")
        if self.k.shape[2] != self.block_size:
            raise ValueError(f"KVCache: dim 2 of k ({self.k.shape[2]}) must equal block_size ({self.block_size})")

    @property
    def num_layers(self) -> int:
        return self.k.shape[0]

    @property
    def num_blocks(self) -> int:
        return self.k.shape[1]

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def device(self) -> torch.device:
        return self.k.device

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    def flat_k(self, layer: int) -> torch.Tensor:
        """A view (num_slots, n_kv_heads, head_dim) of one layer's keys, indexed by flat slot."""
        return self.k[layer].view(self.num_slots, self.k.shape[3], self.k.shape[4])

    def flat_v(self, layer: int) -> torch.Tensor:
        """A view (num_slots, n_kv_heads, head_dim) of one layer's values, indexed by flat slot."""
        return self.v[layer].view(self.num_slots, self.v.shape[3], self.v.shape[4])

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        """Bytes one block takes across all layers, keys and values."""
        elem = torch.empty((), dtype=dtype).element_size()
        return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * elem

    @classmethod
    def from_budget(cls, model_config: ModelConfig, budget_bytes: int, block_size: int,
                    device: torch.device | str, dtype: torch.dtype) -> "KVCache":
        """Allocate as many whole blocks as `budget_bytes` holds (zero-filled). Raises ValueError if not one fits."""
        if not isinstance(block_size, int) or block_size <= 0:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        if not isinstance(budget_bytes, int) or budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be a positive int, got {budget_bytes!r}")
        per_block = cls.bytes_per_block(model_config, block_size, dtype)
        num_blocks = budget_bytes // per_block
        if num_blocks < 1:
            raise ValueError(f"a KV budget of {budget_bytes} bytes holds no block: one block of {block_size} tokens "
                             f"takes {per_block} bytes for this model")
        shape = (model_config.num_layers, num_blocks, block_size, model_config.num_kv_heads, model_config.head_dim)
        # zeros, not empty: padded slots read by the attention kernels must never hold NaN bit patterns.
        return cls(k=torch.zeros(shape, device=device, dtype=dtype), v=torch.zeros(shape, device=device, dtype=dtype),
                   block_size=block_size)
