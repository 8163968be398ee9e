"""The shape of a Llama-family model, read from a Hugging Face `config.json` (or built from GGUF metadata).

Covers Llama 2/3 (incl. Llama-3.1 `rope_type: llama3` scaling), SmolLM2, Qwen2/2.5 (QKV bias) and Mistral.
Both config spellings are accepted: transformers < 5 (`rope_theta` + `rope_scaling`) and >= 5 (`rope_parameters`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# Architectures whose attention/MLP are the plain Llama block (RMSNorm, RoPE, GQA, SwiGLU).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
# Rope variants whose frequencies we know how to compute.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. `default` = none; `linear` divides positions by `factor`; `llama3` is Llama-3.1's
    piecewise wavelength scaling (low frequencies scaled by `factor`, high kept, smooth ramp between)."""

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"unsupported rope_type {self.rope_type!r}; supported: {SUPPORTED_ROPE_TYPES}")
        if self.factor <= 0:
            raise ValueError(f"rope scaling factor must be > 0, got {self.factor}")
        if self.rope_type == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError("llama3 rope scaling needs high_freq_factor > low_freq_factor")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2/2.5 always; Llama when `attention_bias` is set
    model_type: str = "llama"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "max_position_embeddings"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"model config: {name} must be a positive int, got {v!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model config: num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"model config: head_dim must be even for RoPE, got {self.head_dim}")
        if not (self.rms_norm_eps > 0 and self.rope_theta > 0):
            raise ValueError("model config: rms_norm_eps and rope_theta must be > 0")
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {self.model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_kv_heads

    def num_parameters(self) -> int:
        per_layer = (self.hidden_size * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden_size
                     + 3 * self.hidden_size * self.intermediate_size + 2 * self.hidden_size)
        if self.qkv_bias:
            per_layer += self.q_size + 2 * self.kv_size
        embed = self.vocab_size * self.hidden_size
        return self.num_layers * per_layer + embed * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    def inv_freq(self):
        """(head_dim/2,) float32 torch tensor of RoPE inverse frequencies, scaling applied.

        float32 on purpose: the reference implementations compute it so, and matching them keeps logits close."""
        import torch

        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim
        inv = 1.0 / (self.rope_theta ** exponent)
        rs = self.rope_scaling
        if rs.rope_type == "linear":
            inv = inv / rs.factor
        elif rs.rope_type == "llama3":
            low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
            high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
            wavelen = 2 * math.pi / inv
            # Long wavelengths (low frequencies) are stretched by `factor`; short ones kept; a smooth ramp between.
            smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
                rs.high_freq_factor - rs.low_freq_factor)
            ramp = (1 - smooth) * inv / rs.factor + smooth * inv
            inv = torch.where(wavelen > low_wavelen, inv / rs.factor, torch.where(wavelen < high_wavelen, inv, ramp))
        return inv

    @classmethod
    def from_dict(cls, cfg: dict) -> "ModelConfig":
        if not isinstance(cfg, dict):
            raise TypeError(f"model config must be a dict, got {type(cfg).__name__}")
        model_type = cfg.get("model_type", "llama")
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            rope_params = dict(cfg.get("rope_parameters") or {})
            scaling = dict(cfg.get("rope_scaling") or {})
            rope_theta = float(rope_params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
            scaling_src = scaling or rope_params
            rope_type = scaling_src.get("rope_type", scaling_src.get("type", "default")) or "default"
            rope = RopeScaling(
                rope_type=rope_type,
                factor=float(scaling_src.get("factor", 1.0)),
                low_freq_factor=float(scaling_src.get("low_freq_factor", 1.0)),
                high_freq_factor=float(scaling_src.get("high_freq_factor", 4.0)),
                original_max_position_embeddings=int(scaling_src.get("original_max_position_embeddings", 8192)),
            )
            return cls(
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
                rope_theta=rope_theta,
                rope_scaling=rope,
                max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                qkv_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
                model_type=model_type,
            )
        except KeyError as e:
            raise ValueError(f"model config is missing the key {e.args[0]!r}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no model config at {path}")
        return cls.from_dict(json.loads(path.read_text()))
