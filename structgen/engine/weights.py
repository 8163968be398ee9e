"""Load a Llama-family model: a Hugging Face folder (config.json + *.safetensors, sharded or not) or a GGUF file
(dequantized with the `gguf` package), into a `LlamaModel` with fused QKV and gate/up weights.

    model = load_model("default", "cpu")         # SmolLM2-135M-Instruct, converted once into the structgen cache
    model = load_model("/models/Qwen2.5-1.5B", "cuda")
    model = load_model("/models/x.Q4_1.gguf", "cpu")

dtype defaults per device: float32 on CPU (bf16 matmuls are slow there), bfloat16 on CUDA.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .model import LlamaModel, RotaryEmbedding
from .model_config import ModelConfig

# HF per-layer parameter names -> (our fused parameter, slot in the fusion order)
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_FUSED_PARTS = {
    "self_attn.q_proj.weight": ("qkv_weight", 0),
    "self_attn.k_proj.weight": ("qkv_weight", 1),
    "self_attn.v_proj.weight": ("qkv_weight", 2),
    "self_attn.q_proj.bias": ("qkv_bias", 0),
    "self_attn.k_proj.bias": ("qkv_bias", 1),
    "self_attn.v_proj.bias": ("qkv_bias", 2),
    "mlp.gate_proj.weight": ("gate_up_weight", 0),
    "mlp.up_proj.weight": ("gate_up_weight", 1),
}
_RENAMED = {
    "self_attn.o_proj.weight": "o_weight",
    "mlp.down_proj.weight": "down_weight",
    "input_layernorm.weight": "input_norm",
    "post_attention_layernorm.weight": "post_attention_norm",
}
# Tensors some checkpoints carry that the forward does not need.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def default_dtype(device: torch.device | str) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_model(path_or_default: str | Path = "default", device: torch.device | str = "cpu",
               dtype: torch.dtype | None = None, *, max_positions: int | None = None,
               attention_backend: str | None = None) -> LlamaModel:
    """Load a model from "default", a HF folder, or a .gguf file, onto `device` in `dtype` (default per device).

    max_positions: size of the RoPE table (default: the config's max_position_embeddings); longer sequences are
    refused. attention_backend: "torch" | "native" | "triton" (default: triton on CUDA when installed, native on CPU
    when the native kernels are built, else torch)."""
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    if str(path_or_default) == "default":
        from ..assets import prepare_default_model

        path = prepare_default_model()
    else:
        path = Path(path_or_default).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        config, tensors = read_gguf(path)
    elif path.is_dir():
        config = ModelConfig.from_file(path)
        tensors = read_safetensors_folder(path)
    else:
        raise FileNotFoundError(f"no model at {path}: expected a folder with config.json + *.safetensors, "
                                f"or a .gguf file")
    return build_model(config, tensors, device, dtype, max_positions=max_positions,
                       attention_backend=attention_backend)


def read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF folder, by checkpoint name (sharded checkpoints: every shard the index lists)."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        paths = [folder / f for f in files]
    else:
        paths = sorted(folder.glob("*.safetensors"))
    if not paths:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    tensors: dict[str, torch.Tensor] = {}
    for p in paths:
        tensors.update(load_file(str(p)))
    return tensors


def build_model(config: ModelConfig, tensors: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype,
                *, max_positions: int | None = None, attention_backend: str | None = None) -> LlamaModel:
    """A LlamaModel from HF-named tensors (`model.layers.0.self_attn.q_proj.weight`, ...), fused on the way."""
    fused = fuse_state_dict(config, tensors)
    with torch.device("meta"):
        model = LlamaModel(config, max_positions=1, attention_backend=attention_backend)
    state = {k: v.to(device=device, dtype=dtype) for k, v in fused.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected:
        raise ValueError(f"checkpoint has tensors the model does not use: {sorted(unexpected)[:5]}")
    if missing:
        raise ValueError(f"checkpoint lacks tensors: {sorted(missing)[:5]}")
    model.rotary = RotaryEmbedding(config, max_positions or config.max_position_embeddings).to(device)
    return model.eval()


def fuse_state_dict(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename HF tensors to ours and concatenate q|k|v and gate|up. Raises ValueError on a missing part."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, list] = {}
    for name, t in tensors.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        if name == "model.embed_tokens.weight":
            out["embed_weight"] = t
        elif name == "model.norm.weight":
            out["norm"] = t
        elif name == "lm_head.weight":
            if not config.tie_word_embeddings:
                out["lm_head_weight"] = t
        elif m := _LAYER_RE.match(name):
            layer, rest = int(m.group(1)), m.group(2)
            if rest in _FUSED_PARTS:
                target, slot = _FUSED_PARTS[rest]
                parts.setdefault(f"layers.{layer}.{target}", [None, None, None])[slot] = t
            elif rest in _RENAMED:
                out[f"layers.{layer}.{_RENAMED[rest]}"] = t
            else:
                out[f"layers.{layer}.{rest}"] = t  # reported as unexpected by build_model
        else:
            out[name] = t
    for name, ps in parts.items():
        need = 2 if "gate_up" in name else 3
        if any(p is None for p in ps[:need]):
            raise ValueError(f"checkpoint lacks part of {name} (have {sum(p is not None for p in ps)} of {need})")
        out[name] = torch.cat(ps[:need], dim=0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# GGUF

_GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_ARCHS = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}


def unpermute_gguf_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation. Its converter interleaves the two rotary halves of every head
    (rows [0..d/2) and [d/2..d) -> pairs) for its GPT-J-style rope; our rope rotates halves, like HF."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def gguf_config(reader) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch not in _GGUF_ARCHS:
        raise ValueError(f"unsupported GGUF architecture {arch!r}; supported: {sorted(_GGUF_ARCHS)}")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise ValueError("GGUF files with per-frequency rope factors (Llama-3.1 scaling) are not supported; "
                         "load the Hugging Face folder instead")
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    cfg = {
        "model_type": _GGUF_ARCHS[arch],
        "vocab_size": int(_field(reader, f"{arch}.vocab_size", int(embd.shape[-1]))),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        "head_dim": int(_field(reader, f"{arch}.attention.key_length", hidden // heads)),
        "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 4096)),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
    }
    scaling = _field(reader, f"{arch}.rope.scaling.type")
    if scaling and scaling != "none":
        cfg["rope_scaling"] = {"rope_type": scaling, "factor": float(_field(reader, f"{arch}.rope.scaling.factor"))}
    return ModelConfig.from_dict(cfg)


def read_gguf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, HF-named float32 tensors) from a GGUF file, dequantizing every tensor."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    config = gguf_config(reader)
    tensors: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        name = _gguf_to_hf_name(t.name)
        if name is None:
            raise ValueError(f"GGUF tensor {t.name!r} has no place in a Llama-family model")
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        if config.model_type != "qwen2":  # llama.cpp permutes Q/K rows only for its llama-arch rope
            if t.name.endswith("attn_q.weight"):
                w = unpermute_gguf_rows(w, config.num_heads)
            elif t.name.endswith("attn_k.weight"):
                w = unpermute_gguf_rows(w, config.num_kv_heads)
        if not w.flags.writeable or not w.flags.c_contiguous:  # unquantized tensors are views of the mmap
            w = np.array(w, dtype=np.float32, order="C")
        tensors[name] = torch.from_numpy(w)
    return config, tensors


def _gguf_to_hf_name(name: str) -> str | None:
    if name in _GGUF_NAMES:
        return _GGUF_NAMES[name]
    m = re.match(r"^blk\.(\d+)\.(.+)$", name)
    if m and m.group(2) in _GGUF_LAYER:
        return f"model.layers.{m.group(1)}.{_GGUF_LAYER[m.group(2)]}"
    return None


