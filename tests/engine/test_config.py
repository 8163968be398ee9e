import dataclasses

import pytest

from structgen.engine.config import EngineConfig
from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams


def test_defaults_are_valid_and_frozen():
    cfg = EngineConfig()
    assert cfg.resolved_device in ("cpu", "cuda")
    assert cfg.resolved_dtype == ("float32" if cfg.resolved_device == "cpu" else "bfloat16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.block_size = 32


@pytest.mark.parametrize("kwargs,needle", [
    (dict(block_size=12), "block_size"),
    (dict(max_num_seqs=0), "max_num_seqs"),
    (dict(max_num_seqs=64, max_num_batched_tokens=32), "max_num_batched_tokens"),
    (dict(kv_cache_bytes=0), "kv_cache_bytes"),
    (dict(device="tpu"), "device"),
    (dict(dtype="int8"), "dtype"),
    (dict(speculation="magic"), "speculation"),
    (dict(speculation="draft_model"), "draft_model"),
    (dict(compile_workers=0), "compile_workers"),
    (dict(max_model_len=1), "max_model_len"),
])
def test_bad_engine_config_names_the_field(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        EngineConfig(**kwargs)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(temperature=-1), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0), "top_p"),
    (dict(top_k=-2), "top_k"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(seed=-1), "seed"),
    (dict(stop=("",)), "stop"),
])
def test_bad_sampling_params_name_the_field(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SamplingParams(**kwargs)


def test_stop_list_becomes_a_tuple():
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(stop="x").stop == ("x",)
    assert SamplingParams().greedy and not SamplingParams(temperature=0.5).greedy


def test_constraint_spec_and_request_validation():
    ConstraintSpec("regex", "[a-z]+")
    with pytest.raises(ValueError, match="kind"):
        ConstraintSpec("lua", "x")
    with pytest.raises(ValueError, match="choice"):
        ConstraintSpec("choice", [])
    with pytest.raises(ValueError, match="regex"):
        ConstraintSpec("regex", 5)
    with pytest.raises(ValueError, match="prompt_token_ids"):
        GenerateRequest("r", [])
    with pytest.raises(ValueError, match="request_id"):
        GenerateRequest("", [1])
    with pytest.raises(TypeError, match="constraint"):
        GenerateRequest("r", [1], constraint="[a-z]")
