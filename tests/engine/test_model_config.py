"""ModelConfig from config.json in both transformers spellings, rope scaling variants, and validation."""

from __future__ import annotations

import pytest
import torch

from structgen.engine.model_config import ModelConfig

BASE = dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8)


def test_defaults_and_derived_sizes():
    c = ModelConfig.from_dict({**BASE, "num_key_value_heads": 2})
    assert (c.head_dim, c.group_size, c.q_size, c.kv_size) == (8, 4, 64, 16)
    assert not c.qkv_bias and c.rope_scaling.rope_type == "default"


def test_both_rope_spellings_agree():
    old = ModelConfig.from_dict({**BASE, "rope_theta": 5e5,
                                 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
    new = ModelConfig.from_dict({**BASE, "rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0,
                                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                             "original_max_position_embeddings": 8192}})
    assert old == new and old.rope_theta == 5e5 and old.rope_scaling.rope_type == "llama3"


def test_qwen2_has_qkv_bias_and_linear_scaling_divides_frequencies():
    assert ModelConfig.from_dict({**BASE, "model_type": "qwen2"}).qkv_bias
    plain = ModelConfig.from_dict(BASE)
    linear = ModelConfig.from_dict({**BASE, "rope_scaling": {"type": "linear", "factor": 4.0}})
    torch.testing.assert_close(linear.inv_freq(), plain.inv_freq() / 4)


@pytest.mark.parametrize("patch,match", [
    ({"num_key_value_heads": 3}, "multiple"),
    ({"model_type": "gpt2"}, "unsupported model_type"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "unsupported rope_type"),
    ({"hidden_size": 0}, "positive"),
])
def test_invalid_configs_are_value_errors(patch, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_dict({**BASE, **patch})


def test_missing_key_and_wrong_type():
    with pytest.raises(ValueError, match="vocab_size"):
        ModelConfig.from_dict({k: v for k, v in BASE.items() if k != "vocab_size"})
    with pytest.raises(TypeError):
        ModelConfig.from_dict([1, 2])
