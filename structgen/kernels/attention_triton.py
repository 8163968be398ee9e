"""Triton source of the paged attention kernel (see structgen/kernels/attention.py for the contract).

Imported only when the Triton backend is used. The kernel is jitted lazily, keyed on TRITON_INTERPRET, because
triton.jit decides at decoration time whether to compile for the GPU or interpret on CPU tensors (tests).
"""

# NOTE: no `from __future__ import annotations`: Triton reads the tl.constexpr annotations as objects.
import functools
import os

import triton
import triton.language as tl


def _paged_attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, block_tables_ptr, token_seq_ptr, token_kv_len_ptr, scale,
           stride_qt, stride_qh, stride_ks, stride_kh, stride_ot, stride_oh, stride_bt,
           GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
           BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    tok = tl.program_id(0)
    kvh = tl.program_id(1)
    seq = tl.load(token_seq_ptr + tok)
    kv_len = tl.load(token_kv_len_ptr + tok)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    h_ok = offs_h < GROUP
    d_ok = offs_d < HEAD_DIM
    heads = kvh * GROUP + offs_h
    q = tl.load(q_ptr + tok * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=h_ok[:, None] & d_ok[None, :], other=0.0)  # (BLOCK_H, BLOCK_D)
    m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_D), dtype=tl.float32)
    for start in range(0, kv_len, BLOCK_N):
        pos = start + tl.arange(0, BLOCK_N)
        p_ok = pos < kv_len
        blk = tl.load(block_tables_ptr + seq * stride_bt + pos // BLOCK_SIZE, mask=p_ok, other=0)
        slot = blk.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE
        kv_off = slot[:, None] * stride_ks + kvh * stride_kh + offs_d[None, :]
        kv_ok = p_ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + kv_off, mask=kv_ok, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_ptr + kv_off, mask=kv_ok, other=0.0)  # (BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale  # (BLOCK_H, BLOCK_N)
        s = tl.where(p_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(out_ptr + tok * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=h_ok[:, None] & d_ok[None, :])



@functools.lru_cache(maxsize=2)
def _jitted(interpret: bool):
    del interpret  # part of the cache key only
    return triton.jit(_paged_attention_kernel)


def attention_kernel():
    return _jitted(os.environ.get("TRITON_INTERPRET", "0") == "1")
