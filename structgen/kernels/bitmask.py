"""Apply a batch of token bitmasks to logits in one kernel: disallowed entries become -inf, in place.

The mask layout is the one written down in structgen/fsm/bitmask.py: int32 `(B, ceil(V/32))`, bit `i % 32` of
word `i // 32` set = token `i` allowed. Logit columns the mask does not cover (a model vocabulary padded past the
tokenizer's, as in Qwen2) are never real tokens and are masked too.

- `apply_token_bitmask_reference`: plain torch, vectorized bit unpacking (no per-row loop). CPU and tests.
- `apply_token_bitmask_triton`: one Triton program per (row, vocab block). CUDA.
Which one a device runs is decided once, in `structgen.kernels.dispatch`.
"""

from __future__ import annotations

import functools

import torch

_BITS = 32


@functools.lru_cache(maxsize=8)
def _shifts(device: torch.device) -> torch.Tensor:
    return torch.arange(_BITS, dtype=torch.int32, device=device)  # (32,)


def _check(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    if logits.dim() != 2 or bitmask.dim() != 2:
        raise ValueError(f"logits must be (B, V) and bitmask (B, W); got {tuple(logits.shape)} and "
                         f"{tuple(bitmask.shape)}")
    if bitmask.dtype != torch.int32:
        raise TypeError(f"bitmask must be int32, got {bitmask.dtype}")
    if logits.shape[0] != bitmask.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows but bitmask has {bitmask.shape[0]}")
    if logits.device != bitmask.device:
        raise ValueError(f"logits on {logits.device} but bitmask on {bitmask.device}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor, got {logits.dtype}")


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, W) int32 -> (B, vocab_size) bool, True = allowed. Columns past 32*W are False."""
    b, w = bitmask.shape
    bits = ((bitmask.unsqueeze(-1) >> _shifts(bitmask.device)) & 1).view(b, w * _BITS).bool()  # (B, 32W)
    if w * _BITS >= vocab_size:
        return bits[:, :vocab_size]
    return torch.cat([bits, bits.new_zeros((b, vocab_size - w * _BITS))], dim=1)


def apply_token_bitmask_reference(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """logits: (B, V) float, modified in place and returned; bitmask: (B, W) int32 on the same device."""
    _check(logits, bitmask)
    return logits.masked_fill_(~unpack_bitmask(bitmask, logits.shape[1]), float("-inf"))


def apply_token_bitmask_triton(logits: torch.Tensor, bitmask: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Same contract as the reference; logits rows must be contiguous in the vocab dimension."""
    _check(logits, bitmask)
    if logits.stride(1) != 1 or bitmask.stride(1) != 1:
        raise ValueError("apply_token_bitmask_triton needs logits and bitmask contiguous along the last dimension")
    b, v = logits.shape
    if b == 0:
        return logits
    from .bitmask_triton import bitmask_kernel

    grid = (b, -(-v // block))
    bitmask_kernel()[grid](logits, bitmask, v, bitmask.shape[1], logits.stride(0), bitmask.stride(0), BLOCK=block)
    return logits
