"""Triton source of the bitmask kernel (contract: structgen/kernels/bitmask.py). Imported only when used; jitted
lazily, keyed on TRITON_INTERPRET (triton.jit decides at decoration time whether to compile or interpret)."""

# NOTE: no `from __future__ import annotations`: Triton reads the tl.constexpr annotations as objects.
import functools
import os

import triton
import triton.language as tl


def _apply_bitmask_kernel(logits_ptr, mask_ptr, vocab_size, num_words, stride_logits, stride_mask,
                          BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # vocab ids of this block
    in_vocab = offs < vocab_size
    word_idx = offs // 32
    covered = word_idx < num_words
    words = tl.load(mask_ptr + row * stride_mask + word_idx, mask=in_vocab & covered, other=0)
    allowed = ((words >> (offs % 32)) & 1) != 0
    # write only the masked entries: most rows allow few tokens, but unconstrained rows allow all
    tl.store(logits_ptr + row * stride_logits + offs, tl.full((BLOCK,), float("-inf"), tl.float32)
             .to(logits_ptr.dtype.element_ty), mask=in_vocab & ~allowed)


@functools.lru_cache(maxsize=2)
def _jitted(interpret: bool):
    del interpret  # part of the cache key only
    return triton.jit(_apply_bitmask_kernel)


def bitmask_kernel():
    return _jitted(os.environ.get("TRITON_INTERPRET", "0") == "1")
