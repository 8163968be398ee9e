"""Paged attention for decode and verify rows on CPU through the native kernel (`cpu_paged_attention.c`).

The kernel reads each sequence's keys/values in place through its block table (one task per run of a sequence's new
tokens and KV head, online softmax), where the torch reference first gathers them into a contiguous buffer.
`structgen.kernels.attention` sends the rows with at most SHORT_ROW_MAX_QUERY new tokens here under the "native" backend; long prompt chunks keep
the torch path.
"""

from __future__ import annotations

import torch

from . import native

MAX_HEAD_DIM = 256  # the kernel's MAX_D
MAX_VEC = 16  # query vectors per task (MAX_VEC): tokens of a run x query heads per KV head
MAX_BLOCK_SIZE = 64  # MAX_BLOCK


def supports(num_heads: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype) -> bool:
    """Whether the native kernel can run attention of this shape (and is built here)."""
    return (dtype == torch.float32 and head_dim % 8 == 0 and head_dim <= MAX_HEAD_DIM
            and num_heads % num_kv_heads == 0 and num_heads // num_kv_heads <= MAX_VEC
            and 0 < block_size <= MAX_BLOCK_SIZE and native.available())


def run_length(group_size: int) -> int:
    """Most new tokens of one sequence a task takes together (their query vectors fill at most MAX_VEC)."""
    return max(1, MAX_VEC // group_size)


def check_runs(runs: torch.Tensor, num_tokens: int, group_size: int) -> None:
    """Raise ValueError unless every run of `runs` (n, 2) is non-empty, inside the first `num_tokens` tokens and at
    most run_length(group_size) long (what the kernel's buffers hold)."""
    if runs.numel() and (int(runs[:, 1].max()) > run_length(group_size) or int(runs[:, 1].min()) < 1
                         or int(runs[:, 0].min()) < 0 or int((runs[:, 0] + runs[:, 1]).max()) > num_tokens):
        raise ValueError("native paged attention: a run is empty, too long or outside q")


def paged_attention_rows(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, runs: torch.Tensor,
                         token_seq: torch.Tensor, token_kv_len: torch.Tensor, block_tables: torch.Tensor,
                         block_size: int, scale: float, out: torch.Tensor,
                         runs_checked_for: tuple[int, int] | None = None) -> None:
    """out[t] = attention of q[t] over positions 0 .. token_kv_len[t]-1 of sequence token_seq[t], for the tokens of
    `runs`: (n, 2) int64 (first token, count), each run consecutive new tokens of one sequence, count <=
    run_length(Hq / Hkv).

    q, out: (T, Hq, D) float32 CPU with a contiguous last dim; k_cache/v_cache: (slots, Hkv, D) contiguous;
    token_seq, token_kv_len: (T,) int32; block_tables: (B, max_blocks) int32. The caller checked `supports(...)`;
    this only guards what would make the kernel read out of bounds.

    runs_checked_for: the (num_tokens, group_size) that `check_runs` already passed these runs for (an attention
    plan checks them once per forward, not once per layer); when it matches q's shape the check is not repeated."""
    lib = native.library()
    t, hq, d = q.shape
    hkv = k_cache.shape[1]
    if lib is None or not supports(hq, hkv, d, block_size, q.dtype):
        raise RuntimeError("native paged attention cannot run this call; use the torch backend")
    if (q.stride(2) != 1 or out.stride(2) != 1 or not k_cache.is_contiguous() or not v_cache.is_contiguous()
            or k_cache.shape != v_cache.shape or k_cache.shape[2] != d or out.shape != q.shape
            or k_cache.shape[0] % block_size):
        raise ValueError("native paged attention: unexpected layout of q, out or the KV cache")
    runs = runs.to(torch.int64).contiguous()
    if runs_checked_for != (t, hq // hkv):
        check_runs(runs, t, hq // hkv)
    token_seq = token_seq.to(torch.int32).contiguous()
    token_kv_len = token_kv_len.to(torch.int32).contiguous()
    block_tables = block_tables.to(torch.int32).contiguous()
    n = runs.shape[0]
    if n == 0:
        return
    lib.paged_attention_rows(q.data_ptr(), q.stride(0), q.stride(1), k_cache.data_ptr(), v_cache.data_ptr(),
                             k_cache.shape[0] // block_size,
                             block_tables.data_ptr(), block_tables.stride(0), block_size, token_seq.data_ptr(),
                             token_kv_len.data_ptr(), runs.data_ptr(), n, hq, hkv, d, scale, out.data_ptr(),
                             out.stride(0), out.stride(1), torch.get_num_threads())
