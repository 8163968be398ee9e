"""A native torch Llama-family decoder (Llama 2/3, SmolLM2, Qwen2/2.5, Mistral) over the paged KV cache.

`model(batch, kv) -> (N, vocab) float32 logits` for the rows in `batch.logits_indices`. The batch is flat: all new
tokens of all sequences in one (T, hidden) tensor, so prefill chunks, decode rows and verify rows share every
matmul. Weights are stored fused (one QKV projection, one gate+up projection) to halve the per-layer kernel calls;
`structgen.engine.weights` builds them from checkpoint tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.attention import AttentionPlan, paged_attention, plan_attention
from ..kernels.dispatch import KernelBackends, backends_for
from .forward_batch import ForwardBatch
from .kv_cache import KVCache
from .model_config import ModelConfig


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE (the Hugging Face Llama convention) with a precomputed cos/sin table."""

    def __init__(self, config: ModelConfig, max_positions: int):
        super().__init__()
        inv_freq = config.inv_freq()  # (D/2,) float32
        pos = torch.arange(max_positions, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq)  # (P, D/2)
        self.register_buffer("cos", freqs.cos(), persistent=False)  # (P, D/2)
        self.register_buffer("sin", freqs.sin(), persistent=False)  # (P, D/2)

    def table(self, positions: torch.Tensor, dtype: torch.dtype,
              max_position: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for the given positions: each (T, 1, D/2), in `dtype`. Pass `max_position` when the caller
        knows it on the host, to spare a device sync."""
        if max_position is None and positions.numel():
            max_position = int(positions.max())
        if max_position is not None and max_position >= self.cos.shape[0]:
            raise ValueError(f"position {max_position} is beyond the model's maximum {self.cos.shape[0] - 1}")
        return self.cos[positions].unsqueeze(1).to(dtype), self.sin[positions].unsqueeze(1).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (T, H, D); cos/sin: (T, 1, D/2). Returns a new (T, H, D) tensor."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.config = config
        h = config.hidden_size
        self.input_norm = nn.Parameter(torch.ones(h))
        self.post_attention_norm = nn.Parameter(torch.ones(h))
        # Plain parameters, not nn.Linear: its random init costs seconds at load time for nothing.
        self.qkv_weight = nn.Parameter(torch.empty(config.q_size + 2 * config.kv_size, h))  # rows: q | k | v
        self.qkv_bias = nn.Parameter(torch.empty(config.q_size + 2 * config.kv_size)) if config.qkv_bias else None
        self.o_weight = nn.Parameter(torch.empty(h, config.q_size))
        self.gate_up_weight = nn.Parameter(torch.empty(2 * config.intermediate_size, h))  # rows: gate | up
        self.down_weight = nn.Parameter(torch.empty(h, config.intermediate_size))
        # {projection: Int8Linear} once structgen.engine.quantization.quantize_int8_ ran (the float weights are then
        # None); None: the float weights above run through the device's kernels.
        self.int8: dict | None = None

    def _linear(self, part: str, x: torch.Tensor, kernels: KernelBackends) -> torch.Tensor:
        """x (T, in) @ W.T (+ bias) for projection `part` ("qkv", "o", "gate_up", "down") -> (T, out)."""
        if self.int8 is not None:
            return self.int8[part](x)
        return kernels.linear(x, getattr(self, f"{part}_weight"), self.qkv_bias if part == "qkv" else None)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, batch: ForwardBatch, kv: KVCache,
                plan: AttentionPlan, backend: str, kernels: KernelBackends) -> torch.Tensor:
        cfg = self.config
        t = x.shape[0]
        h = F.rms_norm(x, (cfg.hidden_size,), self.input_norm, cfg.rms_norm_eps)  # (T, hidden)
        qkv = self._linear("qkv", h, kernels)  # (T, q_size + 2 kv_size)
        q, k, v = qkv.split((cfg.q_size, cfg.kv_size, cfg.kv_size), dim=-1)
        q = apply_rope(q.view(t, cfg.num_heads, cfg.head_dim), cos, sin)  # (T, Hq, D)
        k = apply_rope(k.view(t, cfg.num_kv_heads, cfg.head_dim), cos, sin)  # (T, Hkv, D)
        k_cache = kv.flat_k(self.layer_index)  # (slots, Hkv, D)
        v_cache = kv.flat_v(self.layer_index)
        # NOTE: the new tokens' K/V are written before attention, which then reads them back through the cache.
        k_cache.index_copy_(0, batch.slot_mapping, k.to(k_cache.dtype))
        v_cache.index_copy_(0, batch.slot_mapping, v.reshape(t, cfg.num_kv_heads, cfg.head_dim).to(v_cache.dtype))
        attn = paged_attention(q, k_cache, v_cache, plan, cfg.head_dim ** -0.5, backend)  # (T, Hq, D)
        # NOTE: in-place residual adds and activation: x is this forward's own buffer (from the embedding).
        x = x.add_(self._linear("o", attn.view(t, cfg.q_size), kernels))
        h = F.rms_norm(x, (cfg.hidden_size,), self.post_attention_norm, cfg.rms_norm_eps)
        gate, up = self._linear("gate_up", h, kernels).chunk(2, dim=-1)  # each (T, intermediate)
        return x.add_(self._linear("down", F.silu(gate).mul_(up), kernels))


class LlamaModel(nn.Module):
    """The decoder. Build with `structgen.engine.weights.load_model`; weights here are fused (see module doc)."""

    def __init__(self, config: ModelConfig, max_positions: int | None = None, attention_backend: str | None = None):
        super().__init__()
        self.config = config
        self.embed_weight = nn.Parameter(torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = nn.Parameter(torch.ones(config.hidden_size))
        self.lm_head_weight = None if config.tie_word_embeddings else nn.Parameter(
            torch.empty(config.vocab_size, config.hidden_size))
        self.rotary = RotaryEmbedding(config, max_positions or config.max_position_embeddings)
        self._attention_backend = attention_backend
        self.lm_head_int8 = None  # an Int8Linear of the logits projection once quantized (structgen.engine.quantization)

    @property
    def device(self) -> torch.device:
        return self.embed_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_weight.dtype

    @property
    def max_positions(self) -> int:
        return self.rotary.cos.shape[0]

    @property
    def kernels(self) -> KernelBackends:
        """The kernels of this model's device (resolved once per device type, see structgen.kernels.dispatch)."""
        return backends_for(self.device)

    @property
    def attention_backend(self) -> str:
        """The attention backend asked for at construction, else the device's default (a forward may still fall
        back from "native" to "torch" for its KV block size: `KernelBackends.attention_for`)."""
        return self._attention_backend or self.kernels.attention

    def output_weight(self) -> torch.Tensor:
        """(vocab, hidden) the logits projection (the embedding when tied)."""
        return self.embed_weight if self.lm_head_weight is None else self.lm_head_weight

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, kv: KVCache) -> torch.Tensor:
        """Run one step. Writes the new tokens' K/V into `kv` at `batch.slot_mapping` (every layer) and returns
        (N, vocab) float32 logits for `batch.logits_indices`."""
        if kv.num_layers != self.config.num_layers or kv.k.shape[3:] != (self.config.num_kv_heads,
                                                                         self.config.head_dim):
            raise ValueError(f"KV cache shape {tuple(kv.k.shape)} does not fit this model")
        kernels = self.kernels
        cfg = self.config
        backend = kernels.attention_for(self._attention_backend, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                                        kv.block_size, self.dtype)
        plan = plan_attention(batch.query_lens, batch.context_lens, batch.block_tables, kv.block_size,
                              cfg.group_size, self.dtype, build_groups=backend != "triton",
                              native_short_rows=backend == "native")
        # positions are normally context + arange(query); a caller may pass others, so check on the device off CUDA
        host_max = None if self.device.type == "cpu" else max(c + q for c, q in zip(batch.context_lens,
                                                                                    batch.query_lens)) - 1
        cos, sin = self.rotary.table(batch.positions, self.dtype, host_max)
        x = F.embedding(batch.input_ids, self.embed_weight)  # (T, hidden)
        for layer in self.layers:
            x = layer(x, cos, sin, batch, kv, plan, backend, kernels)
        x = x.index_select(0, batch.logits_indices)  # (N, hidden): only rows that need logits
        x = F.rms_norm(x, (self.config.hidden_size,), self.norm, self.config.rms_norm_eps)
        if self.lm_head_int8 is not None:
            return self.lm_head_int8(x)  # (N, vocab) float32
        return kernels.linear(x, self.output_weight()).float()  # (N, vocab)
