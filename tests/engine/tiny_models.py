"""Random-weight models for engine tests: the real SmolLM2 vocabulary (so real constraints compile against the real
tokenizer), a few tiny layers, deterministic weights. Fast enough for every test that needs a whole engine step."""

from __future__ import annotations

import torch

from structgen.engine.model_config import ModelConfig
from structgen.engine.weights import build_model


def tiny_model(vocab_size: int = 49152, *, seed: int = 0, layers: int = 2, hidden: int = 32):
    """A random-weight Llama with `vocab_size` ids (the real tokenizer's by default): cheap, deterministic."""
    cfg = ModelConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=layers,
                      num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=4096,
                      tie_word_embeddings=True)
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    t = {"model.embed_tokens.weight": rand(vocab_size, hidden) * 3, "model.norm.weight": torch.ones(hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = rand(cfg.q_size, hidden)
        t[p + "self_attn.k_proj.weight"] = rand(cfg.kv_size, hidden)
        t[p + "self_attn.v_proj.weight"] = rand(cfg.kv_size, hidden)
        t[p + "self_attn.o_proj.weight"] = rand(hidden, cfg.q_size)
        t[p + "mlp.gate_proj.weight"] = rand(2 * hidden, hidden)
        t[p + "mlp.up_proj.weight"] = rand(2 * hidden, hidden)
        t[p + "mlp.down_proj.weight"] = rand(hidden, 2 * hidden)
        t[p + "input_layernorm.weight"] = torch.ones(hidden)
        t[p + "post_attention_layernorm.weight"] = torch.ones(hidden)
    return build_model(cfg, t, torch.device("cpu"), torch.float32)
