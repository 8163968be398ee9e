"""THE token bitmask contract. Every producer and consumer of masks (fsm, kernels, engine) follows this file.

A bitmask is an int32 array of shape `(rows, ceil(V / 32))` for a vocabulary of V ids:
bit `i % 32` of word `i // 32` set  <=>  token `i` is allowed (least-significant bit first).
Padding bits (ids V .. 32 * words - 1) are always zero. Rows are independent (one per sequence / draft position).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

DTYPE = np.int32
BITS_PER_WORD = 32


def num_words(vocab_size: int) -> int:
    """int32 words per row for a vocabulary of `vocab_size` ids."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return (vocab_size + BITS_PER_WORD - 1) // BITS_PER_WORD


def allocate(rows: int, vocab_size: int) -> np.ndarray:
    """A zeroed (rows, num_words(vocab_size)) int32 bitmask (nothing allowed)."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    return np.zeros((rows, num_words(vocab_size)), dtype=DTYPE)


def pack(token_ids: Iterable[int] | np.ndarray, vocab_size: int) -> np.ndarray:
    """The (num_words,) int32 row allowing exactly `token_ids` (each in [0, vocab_size))."""
    ids = np.asarray(token_ids if isinstance(token_ids, np.ndarray) else list(token_ids), dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    words = num_words(vocab_size)
    bits = np.zeros(words * BITS_PER_WORD, dtype=bool)
    bits[ids] = True
    # NOTE: little bit order + little-endian words = bit i%32 of word i//32, on any host.
    return np.packbits(bits, bitorder="little").view("<i4").astype(DTYPE, copy=False)


def unpack(row: np.ndarray) -> np.ndarray:
    """Sorted int64 ids whose bit is set in one (num_words,) int32 row."""
    row = np.ascontiguousarray(row, dtype="<i4")
    if row.ndim != 1:
        raise ValueError(f"unpack takes one row (1-D), got shape {row.shape}")
    return np.flatnonzero(np.unpackbits(row.view(np.uint8), bitorder="little"))


def is_allowed(row: np.ndarray, token_id: int) -> bool:
    """Whether bit `token_id` of one row is set."""
    return bool((int(row[token_id >> 5]) >> (token_id & 31)) & 1)


def count_allowed(row: np.ndarray) -> int:
    return int(np.unpackbits(np.ascontiguousarray(row, dtype="<i4").view(np.uint8)).sum())


def copy_row(dst, src: np.ndarray) -> None:
    """Write the (num_words,) int32 row `src` into `dst`: a numpy int32 row or a torch int32 tensor row.

    `dst` must be 1-D with exactly `src.shape[0]` elements. A CPU tensor is written through a numpy view (no
    torch import, no allocation); a device tensor gets one host-to-device copy.
    """
    if isinstance(dst, np.ndarray):
        if dst.dtype != DTYPE:
            raise TypeError(f"bitmask row must be int32, got {dst.dtype}")
        if dst.shape != src.shape:
            raise ValueError(f"bitmask row must have shape {src.shape}, got {dst.shape}")
        dst[...] = src
        return
    if not hasattr(dst, "copy_") or not hasattr(dst, "device"):
        raise TypeError(f"bitmask row must be a numpy array or torch tensor, got {type(dst).__name__}")
    if str(dst.dtype) != "torch.int32":
        raise TypeError(f"bitmask row must be torch.int32, got {dst.dtype}")
    if tuple(dst.shape) != src.shape:
        raise ValueError(f"bitmask row must have shape {src.shape}, got {tuple(dst.shape)}")
    if dst.device.type == "cpu":
        dst.numpy()[...] = src
    else:
        import torch

        # NOTE: masks are read-only arrays and torch.from_numpy warns on those: hand it a writable copy.
        dst.copy_(torch.from_numpy(np.array(src, dtype=DTYPE)), non_blocking=False)
