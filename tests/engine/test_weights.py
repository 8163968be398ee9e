"""Weight loading: HF folders (single file and sharded), the GGUF path (dequantized, Q/K rows un-permuted) against
transformers' own GGUF loading, dtype per device, and clear errors for broken checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from structgen.engine.weights import default_dtype, load_model, unpermute_gguf_rows


@pytest.fixture(scope="module")
def default_folder():
    from structgen.assets import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="module")
def default_model():
    return load_model("default", "cpu")


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    # what llama.cpp's converter does to Q/K rows (pairs up the two rotary halves of each head)
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.random.default_rng(0).standard_normal((3 * 64, 10)).astype(np.float32)
    permuted = _llama_cpp_permute(w, 3)
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(unpermute_gguf_rows(permuted, 3), w)


def test_gguf_load_matches_transformers_gguf_conversion(default_model):
    # The cached default folder is transformers' own GGUF loading of the same file (structgen/assets.py writes
    # it with AutoModelForCausalLM.from_pretrained(gguf_file=...)), so the tensors must agree exactly.
    from structgen.assets import default_gguf_path

    ours = load_model(default_gguf_path(), "cpu")
    assert ours.config == default_model.config
    a, b = ours.state_dict(), default_model.state_dict()
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0, msg=name)


@pytest.mark.slow
def test_gguf_load_matches_transformers_gguf_loading_directly():
    from transformers import AutoModelForCausalLM

    from structgen.assets import default_gguf_path

    path = default_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ours = load_model(path, "cpu")
    hd = ours.config.head_dim
    for i in (0, 17):
        q = hf.model.layers[i].self_attn.q_proj.weight
        k = hf.model.layers[i].self_attn.k_proj.weight
        torch.testing.assert_close(ours.layers[i].qkv_weight[: q.shape[0]], q, atol=0, rtol=0)
        torch.testing.assert_close(ours.layers[i].qkv_weight[q.shape[0]: q.shape[0] + k.shape[0]], k, atol=0, rtol=0)
        assert k.shape[0] == ours.config.num_kv_heads * hd


def test_sharded_folder_loads_the_same_model(tmp_path, default_folder, default_model):
    tensors = load_file(str(default_folder / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / fname))
        weight_map.update({k: fname for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(default_folder / "config.json", tmp_path / "config.json")
    loaded = load_model(tmp_path, "cpu")
    for name, t in default_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], t, atol=0, rtol=0)


def test_dtype_per_device_and_explicit_override(default_folder):
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda") == torch.bfloat16
    m = load_model(default_folder, "cpu", torch.bfloat16)
    assert m.dtype == torch.bfloat16 and m.layers[0].qkv_weight.dtype == torch.bfloat16


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model"):
        load_model(tmp_path / "nope", "cpu")


def test_checkpoint_missing_a_tensor_is_a_clear_error(tmp_path, default_folder):
    tensors = load_file(str(default_folder / "model.safetensors"))
    del tensors["model.layers.3.self_attn.k_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(default_folder / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError, match="layers.3.qkv_weight"):
        load_model(tmp_path, "cpu")


def test_unsupported_architecture_is_a_clear_error(tmp_path, default_folder):
    cfg = json.loads((default_folder / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'"):
        load_model(tmp_path, "cpu")
