"""Paged attention over a mixed batch: prefill chunks, decode rows and multi-token verify rows in one call.

Every new token t of sequence i (context c_i tokens already cached, query_len q_i, index j in its new tokens)
attends to positions 0 .. c_i + j of its own sequence, read through the sequence's block table. The new tokens'
keys/values must already be written into the cache (the model writes them first), so one gather reads everything.

Two implementations:
- `paged_attention_reference`: plain torch, runs anywhere. Rows are grouped (all decode rows together, short
  multi-token rows together, each long prefill alone); each group is one gather of its KV slots + one SDPA call.
  The gather indices and masks depend only on the batch, so they are built once per forward (`AttentionPlan`)
  and reused by every layer. When the rows of a group start with the same KV blocks (a shared instruction the
  radix cache handed to every request), that prefix is gathered and attended once for all of the group's queries,
  the rest per row, and the two partial results are merged by their log-sum-exp (cascade attention): the
  prefix's K/V are read once instead of once per row.
- "native" (CPU, float32): rows with at most SHORT_ROW_MAX_QUERY new tokens (decode and verify rows) go to the
  C kernel of `cpu_attention`, which reads K/V in place through the block tables with an online softmax (no
  gather); long prompt chunks keep the torch groups above.
- `paged_attention_triton`: one Triton program per (token, kv head) streaming the sequence's blocks with an online
  softmax; all query heads of a GQA group share each K/V tile. Used on CUDA when Triton is installed.
The default backend of a device and the fallback from "native" are decided in `structgen.kernels.dispatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cpu_attention import check_runs, paged_attention_rows, run_length

# Rows with at most this many new tokens are padded into one batched SDPA call; longer ones (prefill chunks,
# where the padding would cost more than a separate call) get a call each.
SHORT_ROW_MAX_QUERY = 32
# A group's common leading KV blocks are attended once for all its rows when they hold at least this many tokens
# (below it the extra SDPA call and merge cost more than the duplicated reads).
CASCADE_MIN_TOKENS = 64


@dataclass
class _Group:
    token_rows: torch.Tensor  # (G, Qmax) int64 rows of the T new tokens (padding repeats a valid row)
    valid: torch.Tensor | None  # (G*Qmax,) bool, which padded rows are real; None when none are padding
    out_rows: torch.Tensor  # (Nvalid,) int64 rows of the T outputs the valid entries go to
    kv_slots: torch.Tensor  # (G, L) int64 flat KV slots to gather (padding -> slot 0, masked out)
    mask: torch.Tensor | None  # (G, 1, group*Qmax, L) additive float mask, or None when nothing is masked
    qmax: int
    contiguous: bool  # token_rows is exactly arange(T) reshaped: no gather/scatter of q and output needed
    # One prompt chunk with no cached context: plain causal attention over its own tokens. SDPA's is_causal skips
    # the upper triangle (about half the work of a long prefill) where an explicit mask would compute it all.
    causal: bool = False
    # Cascade: (P,) int64 flat KV slots of the leading positions every row of the group shares and every query
    # sees; kv_slots/mask then cover positions P.. only. None when the rows share no such prefix.
    prefix_slots: torch.Tensor | None = None


@dataclass
class AttentionPlan:
    """Per-forward attention metadata, shared by all layers. Built by `plan_attention`."""

    groups: list[_Group]
    num_tokens: int
    # For the Triton path:
    token_seq: torch.Tensor  # (T,) int32 sequence index of each new token
    token_kv_len: torch.Tensor  # (T,) int32 how many KV positions each token attends to (c_i + j + 1)
    block_tables: torch.Tensor  # (B, max_blocks) int32
    block_size: int
    # For the native CPU path: (n, 2) int64 runs (first token, count) of the short rows it computes (those rows
    # are not in `groups`); None if none. Checked by cpu_attention.check_runs for (num_tokens, group_size).
    native_runs: torch.Tensor | None = None
    group_size: int = 0


def plan_attention(query_lens: list[int], context_lens: list[int], block_tables: torch.Tensor, block_size: int,
                   group_size: int, dtype: torch.dtype, build_groups: bool = True,
                   native_short_rows: bool = False) -> AttentionPlan:
    """Precompute gather indices and masks for one batch (see module docstring). `group_size` = query heads
    per KV head; masks are laid out for the folded (kv_head, group*query) layout the reference uses.
    `native_short_rows`: leave rows of <= SHORT_ROW_MAX_QUERY tokens to the native kernel (`native_runs`)."""
    device = block_tables.device
    b = len(query_lens)
    starts = [0] * b
    acc = 0
    for i, q in enumerate(query_lens):
        starts[i] = acc
        acc += q
    t = acc
    seq_of_token = torch.repeat_interleave(torch.arange(b, dtype=torch.int32), torch.tensor(query_lens))
    kv_len = torch.cat([torch.arange(c + 1, c + q + 1, dtype=torch.int32) for q, c in zip(query_lens, context_lens)]) \
        if b else torch.zeros(0, dtype=torch.int32)
    groups: list[_Group] = []
    native_runs = None
    if build_groups:
        decode = [i for i, q in enumerate(query_lens) if q == 1]
        short = [i for i, q in enumerate(query_lens) if 1 < q <= SHORT_ROW_MAX_QUERY]
        long_rows = [[i] for i, q in enumerate(query_lens) if q > SHORT_ROW_MAX_QUERY]
        grouped = ([decode] if decode else []) + ([short] if short else [])
        if native_short_rows:
            step = run_length(group_size)
            runs = [(starts[i] + r, min(step, query_lens[i] - r)) for i in sorted(decode + short)
                    for r in range(0, query_lens[i], step)]
            if runs:
                native_runs = torch.tensor(runs, dtype=torch.int64)
                check_runs(native_runs, t, group_size)  # once per forward, not once per layer
            grouped = []
        for rows in grouped + long_rows:
            groups.append(_build_group(rows, starts, query_lens, context_lens, block_tables, block_size,
                                       group_size, dtype, t, device))
    return AttentionPlan(groups=groups, num_tokens=t, token_seq=seq_of_token.to(device),
                         token_kv_len=kv_len.to(device), block_tables=block_tables, block_size=block_size,
                         native_runs=native_runs, group_size=group_size)


def _build_group(rows, starts, query_lens, context_lens, block_tables, block_size, group_size, dtype, t, device):
    qmax = max(query_lens[i] for i in rows)
    qs = torch.tensor([query_lens[i] for i in rows])  # (G,)
    cs = torch.tensor([context_lens[i] for i in rows])  # (G,)
    st = torch.tensor([starts[i] for i in rows])  # (G,)
    j = torch.arange(qmax)  # (Qmax,)
    valid = j[None, :] < qs[:, None]  # (G, Qmax)
    token_rows = st[:, None] + torch.minimum(j[None, :], qs[:, None] - 1)  # (G, Qmax) padding repeats last row
    kv_lens = cs + qs  # (G,)
    length = int(kv_lens.max())
    table = block_tables.index_select(0, torch.tensor(rows, device=device)).long().cpu()  # (G, max_blocks)
    # NOTE: a lone prompt chunk is not split into its cached context + its own causal part: measured, the causal
    # SDPA call at a few hundred tokens runs at a quarter of the masked call's rate, and the split was slower.
    split = _shared_prefix_tokens(table, block_size, int(cs.min()))
    prefix_slots = None
    if split:
        p = torch.arange(split)
        prefix_slots = table[0, p // block_size] * block_size + p % block_size  # (P,)
    pos = torch.arange(split, length)  # (L,) positions this group gathers per row
    blk_idx = (pos // block_size).clamp(max=table.shape[1] - 1)  # (L,)
    blocks = table[:, blk_idx]  # (G, L)
    in_range = pos[None, :] < kv_lens[:, None]  # (G, L)
    slots = torch.where(in_range & (blocks >= 0), blocks * block_size + pos % block_size, 0)  # (G, L)
    # causal within the new tokens: query j sees positions <= c + j
    allowed = pos[None, None, :] <= (cs[:, None] + torch.minimum(j[None, :], qs[:, None] - 1))[:, :, None]  # (G,Qmax,L)
    contiguous = rows == list(range(len(rows))) and len(rows) * qmax == t and bool(valid.all())
    causal = len(rows) == 1 and qmax > 1 and int(cs[0]) == 0
    needs_mask = not causal and not bool(allowed.all())
    mask = None
    if needs_mask:
        folded = allowed.repeat(1, group_size, 1).unsqueeze(1)  # (G, 1, group*Qmax, L), index g*Qmax + j
        mask = torch.zeros(folded.shape, dtype=dtype).masked_fill_(~folded, float("-inf")).to(device)
    flat_valid = valid.reshape(-1)
    return _Group(
        token_rows=token_rows.to(device),
        valid=None if bool(flat_valid.all()) else flat_valid.to(device),
        out_rows=token_rows[valid].to(device),
        kv_slots=slots.to(device),
        mask=mask,
        qmax=qmax,
        contiguous=contiguous,
        causal=causal,
        prefix_slots=None if prefix_slots is None else prefix_slots.to(device),
    )


def _shared_prefix_tokens(table: torch.Tensor, block_size: int, min_context: int) -> int:
    """Tokens in the leading blocks that every row of `table` (G, max_blocks) has in common, rounded down to whole
    blocks inside every row's cached context (so every query sees all of them); 0 if below CASCADE_MIN_TOKENS."""
    if table.shape[0] < 2:
        return 0
    same = (table == table[:1]).all(dim=0) & (table[0] >= 0)  # (max_blocks,)
    lead = int(same.long().cumprod(0).sum())
    tokens = min(lead, min_context // block_size) * block_size
    return tokens if tokens >= CASCADE_MIN_TOKENS else 0


def paged_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: AttentionPlan,
                              scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """q: (T, Hq, D); k_cache/v_cache: (num_slots, Hkv, D) flat views of one layer; returns (T, Hq, D)."""
    t, hq, d = q.shape
    hkv = k_cache.shape[1]
    grp = hq // hkv
    if out is None:
        out = q.new_empty((t, hq, d))
    for g in plan.groups:
        n, qmax = g.token_rows.shape
        # NOTE: index_select, not advanced indexing: ~3x faster on CPU for these gathers.
        qg = q.view(n, qmax, hq, d) if g.contiguous else q.index_select(0, g.token_rows.view(-1))
        length = g.kv_slots.shape[1]
        if g.causal:
            # (1, H, Q, D) unfolded: is_causal aligns queries and keys top-left, which the folded layout breaks.
            kg = k_cache.index_select(0, g.kv_slots.view(-1)).view(1, length, hkv, d).transpose(1, 2)
            vg = v_cache.index_select(0, g.kv_slots.view(-1)).view(1, length, hkv, d).transpose(1, 2)
            o = F.scaled_dot_product_attention(qg.view(1, qmax, hq, d).transpose(1, 2), kg, vg, is_causal=True,
                                               scale=scale, enable_gqa=grp > 1)  # (1, Hq, Q, D)
            o = o.transpose(1, 2).reshape(qmax, hq, d)
            if g.contiguous:
                out.copy_(o)
            else:
                out[g.out_rows] = o
            continue
        # fold the GQA group into the query axis so K/V need no repeat: (G, Hkv, grp*Qmax, D)
        qg = qg.view(n, qmax, hkv, grp, d).permute(0, 2, 3, 1, 4).reshape(n, hkv, grp * qmax, d)
        kg = k_cache.index_select(0, g.kv_slots.view(-1)).view(n, length, hkv, d).transpose(1, 2)  # (G, Hkv, L, D)
        vg = v_cache.index_select(0, g.kv_slots.view(-1)).view(n, length, hkv, d).transpose(1, 2)  # (G, Hkv, L, D)
        if g.prefix_slots is None:
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=g.mask, scale=scale)  # (G, Hkv, grp*Qmax, D)
        else:
            o = _cascade(qg, kg, vg, g.mask, k_cache, v_cache, g.prefix_slots, scale)
        o = o.view(n, hkv, grp, qmax, d).permute(0, 3, 1, 2, 4).reshape(n * qmax, hq, d)  # (G*Qmax, Hq, D)
        if g.contiguous:
            out.copy_(o)
        else:
            out[g.out_rows] = o if g.valid is None else o[g.valid]
    return out


def _attention_lse(q, k, v, mask, scale):
    """SDPA that also returns the log-sum-exp of each query's scores: (out like q, lse (..., Lq) float32)."""
    if _FLASH_CPU is not None and q.device.type == "cpu":
        out, lse = _FLASH_CPU(q, k, v, 0.0, False, attn_mask=mask, scale=scale)
        return out, lse.float()
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask
    lse = torch.logsumexp(s, dim=-1)
    return torch.matmul(torch.exp(s - lse[..., None]), v.float()).to(q.dtype), lse


def _merge(o1, l1, o2, l2):
    """Combine two attention results over disjoint key sets from their outputs and log-sum-exps."""
    m = torch.maximum(l1, l2)
    w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
    return ((o1 * w1[..., None] + o2 * w2[..., None]) / (w1 + w2)[..., None]).to(o1.dtype)


# The CPU flash kernel F.scaled_dot_product_attention dispatches to, called directly for its log-sum-exp output.
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _cascade(qg, kg, vg, mask, k_cache, v_cache, prefix_slots, scale):
    """Attention of folded queries qg (G, Hkv, R, D) over a shared prefix (read once, for all G rows together)
    plus each row's own positions kg/vg (G, Hkv, L, D) under `mask`, merged by log-sum-exp."""
    n, hkv, r, d = qg.shape
    p = prefix_slots.numel()
    kp = k_cache.index_select(0, prefix_slots).view(1, p, hkv, d).transpose(1, 2)  # (1, Hkv, P, D)
    vp = v_cache.index_select(0, prefix_slots).view(1, p, hkv, d).transpose(1, 2)
    qp = qg.transpose(0, 1).reshape(1, hkv, n * r, d)  # every row's queries against the one prefix
    op, lp = _attention_lse(qp, kp, vp, None, scale)  # (1, Hkv, G*R, D), (1, Hkv, G*R)
    op = op.view(hkv, n, r, d).transpose(0, 1)  # (G, Hkv, R, D)
    lp = lp.view(hkv, n, r).transpose(0, 1)  # (G, Hkv, R)
    os_, ls = _attention_lse(qg, kg, vg, mask, scale)  # own positions: every query sees at least itself
    return _merge(op, lp, os_, ls)


def paged_attention_dense_naive(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                                query_lens: list[int], context_lens: list[int], block_tables: torch.Tensor,
                                block_size: int, scale: float) -> torch.Tensor:
    """The slow, obvious version (per sequence, per head, explicit softmax): the oracle for tests."""
    t, hq, d = q.shape
    hkv = k_cache.shape[1]
    grp = hq // hkv
    out = torch.empty_like(q)
    start = 0
    for i, (ql, c) in enumerate(zip(query_lens, context_lens)):
        n = c + ql
        slots = [int(block_tables[i, p // block_size]) * block_size + p % block_size for p in range(n)]
        k = k_cache[slots].float()  # (n, Hkv, D)
        v = v_cache[slots].float()
        for j in range(ql):
            for h in range(hq):
                s = (k[: c + j + 1, h // grp] @ q[start + j, h].float()) * scale  # (c+j+1,)
                out[start + j, h] = (torch.softmax(s, 0) @ v[: c + j + 1, h // grp]).to(q.dtype)
        start += ql
    return out


# ----------------------------------------------------------------------------------------------------------------
# Triton (CUDA; also runs on CPU tensors under TRITON_INTERPRET=1 for tests)


def _next_pow2(x: int) -> int:
    return 1 << (max(1, x) - 1).bit_length()


def paged_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: AttentionPlan,
                           scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `paged_attention_reference`. q: (T, Hq, D); caches: (num_slots, Hkv, D), contiguous."""
    t, hq, d = q.shape
    hkv = k_cache.shape[1]
    grp = hq // hkv
    if out is None:
        out = q.new_empty((t, hq, d))
    if t == 0:
        return out
    q = q.contiguous()
    from .attention_triton import attention_kernel

    kernel = attention_kernel()
    # tl.dot needs every dimension >= 16
    block_h = max(16, _next_pow2(grp))
    block_d = max(16, _next_pow2(d))
    block_n = 64 if block_d <= 128 else 32
    kernel[(t, hkv)](q, k_cache, v_cache, out, plan.block_tables, plan.token_seq, plan.token_kv_len, scale,
                     q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), out.stride(0), out.stride(1),
                     plan.block_tables.stride(0),
                     GROUP=grp, HEAD_DIM=d, BLOCK_SIZE=plan.block_size, BLOCK_H=block_h, BLOCK_D=block_d,
                     BLOCK_N=block_n)
    return out


BACKENDS = ("torch", "native", "triton")


def paged_attention_native(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: AttentionPlan,
                           scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `paged_attention_reference`, for a plan built with native_short_rows=True."""
    if out is None:
        out = q.new_empty(q.shape)
    if plan.native_runs is not None:
        paged_attention_rows(q, k_cache, v_cache, plan.native_runs, plan.token_seq, plan.token_kv_len,
                             plan.block_tables, plan.block_size, scale, out,
                             runs_checked_for=(plan.num_tokens, plan.group_size))
    if plan.groups:
        paged_attention_reference(q, k_cache, v_cache, plan, scale, out)
    return out


def paged_attention(q, k_cache, v_cache, plan: AttentionPlan, scale: float, backend: str = "torch", out=None):
    if backend == "triton":
        return paged_attention_triton(q, k_cache, v_cache, plan, scale, out)
    if backend == "native":
        return paged_attention_native(q, k_cache, v_cache, plan, scale, out)
    if backend == "torch":
        return paged_attention_reference(q, k_cache, v_cache, plan, scale, out)
    raise ValueError(f"unknown attention backend {backend!r} (expected one of {', '.join(BACKENDS)})")
