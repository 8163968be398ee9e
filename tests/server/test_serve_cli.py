"""structgen/server/cli.py: `structgen serve`'s flags are the EngineConfig and ServerConfig fields."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from structgen.engine.config import EngineConfig
from structgen.server import cli
from structgen.server.config import ServerConfig

# A value other than the default for every field (valid together). A new knob must be added here: the test below
# fails until it is, and then checks that its flag reaches the config.
# dtype float32, not bfloat16: quantization int8 keeps float32 activations (EngineConfig refuses the pair).
ENGINE = dict(model="/models/m", device="cpu", dtype="float32", quantization="int8", kv_cache_bytes=1 << 20,
              block_size=32,
              max_num_seqs=8, max_num_batched_tokens=512, max_model_len=2048, compile_workers=3,
              compile_isolation="thread", compile_queue=5, compile_per_client=2,
              enable_prefix_cache=False, overlap_mask_fill=False, forced_runs=False, speculation="draft_model",
              num_speculative_tokens=6, draft_model="/models/small", seed=7, num_threads=2)
SERVER = dict(host="0.0.0.0", port=0, http_port=8123, max_queue=9, default_max_tokens=100, max_tokens_limit=200,
              max_request_bytes=1000, max_response_bytes=2000, api_keys=frozenset({"k1", "k2"}), metrics_port=9100,
              metrics_host="0.0.0.0", drain_timeout_s=2.5, drain_grace_s=1.5, log_prompts=True,
              compiled_registry_size=10)


@pytest.fixture
def parser(monkeypatch):
    monkeypatch.delenv("STRUCTGEN_API_KEYS", raising=False)
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p


def _option_strings(parser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_every_field_has_a_flag_and_help(parser):
    options = _option_strings(parser)
    dests = [a.dest for a in parser._actions]
    for cls in (EngineConfig, ServerConfig):
        for f in dataclasses.fields(cls):
            flag = cli.flag_name(f)
            assert flag in options and options[flag].dest == f.name, f"{cls.__name__}.{f.name} has no flag"
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            assert dests.count(f.name) == 1, f"two flags store {f.name}"


def _argv(values: dict, cls, key_file) -> list[str]:
    argv = []
    for f in dataclasses.fields(cls):
        value, flag = values[f.name], cli.flag_name(f)
        if f.name == "api_keys":
            argv += [flag, str(key_file)]
        elif isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


def test_parsing_round_trips_into_the_configs(parser, tmp_path):
    assert set(ENGINE) == {f.name for f in dataclasses.fields(EngineConfig)}
    assert set(SERVER) == {f.name for f in dataclasses.fields(ServerConfig)}
    key_file = tmp_path / "keys"
    key_file.write_text("k1\n# a comment\nk2\n")
    args = parser.parse_args(_argv(ENGINE, EngineConfig, key_file) + _argv(SERVER, ServerConfig, key_file))
    assert cli.engine_config(args) == EngineConfig(**ENGINE)
    assert cli.server_config(args) == ServerConfig(**SERVER)
    for name, value in {**ENGINE, **SERVER}.items():      # the non-defaults really differ from the defaults
        assert value != getattr(EngineConfig() if name in ENGINE else ServerConfig(), name), name


def test_no_flags_give_the_dataclass_defaults(parser, monkeypatch):
    args = parser.parse_args([])
    assert cli.engine_config(args) == EngineConfig()
    # The one deliberate difference: `structgen serve` serves HTTP on 8000 unless told otherwise, while a program
    # that builds a ServerConfig gets no HTTP port it did not ask for.
    assert cli.server_config(args) == ServerConfig(http_port=8000)
    assert ServerConfig().http_port is None
    assert cli.server_config(parser.parse_args(["--http-port", "0"])).http_port is None
    with pytest.raises(ValueError, match="http-port"):
        cli.server_config(parser.parse_args(["--http-port", "eighty"]))
    monkeypatch.setenv("STRUCTGEN_API_KEYS", "envkey")      # keys from the environment count without the flag
    assert cli.server_config(args).api_keys == frozenset({"envkey"})


def test_the_spellings_in_use_still_parse(parser):
    """The flags README, docs/USAGE.md, tests and scripts use."""
    args = parser.parse_args([
        "--model", "default", "--device", "cpu", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
        "--metrics-host", "127.0.0.1", "--max-queue", "64", "--max-tokens-limit", "512", "--default-max-tokens", "64",
        "--max-request-bytes", "4096", "--drain-timeout", "4", "--max-num-seqs", "4", "--kv-cache-bytes",
        str(256 << 20), "--max-model-len", "1024", "--no-forced-runs", "--speculation", "off",
        "--num-speculative-tokens", "3", "--log-prompts", "--log-level", "debug"])
    eng, srv = cli.engine_config(args), cli.server_config(args)
    assert (eng.device, eng.max_num_seqs, eng.kv_cache_bytes, eng.max_model_len, eng.forced_runs, eng.speculation,
            eng.num_speculative_tokens) == ("cpu", 4, 256 << 20, 1024, False, "off", 3)
    assert (srv.port, srv.metrics_port, srv.max_queue, srv.max_tokens_limit, srv.default_max_tokens,
            srv.max_request_bytes, srv.drain_timeout_s, srv.log_prompts) == (0, 0, 64, 512, 64, 4096, 4.0, True)
    assert args.log_level == "debug"


def test_a_draft_model_alone_turns_draft_speculation_on(parser):
    assert cli.engine_config(parser.parse_args(["--draft-model", "/m"])).speculation == "draft_model"
    assert cli.engine_config(parser.parse_args(["--draft-model", "/m", "--speculation", "off"])).speculation == "off"


def test_bad_values_are_refused(parser, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args(["--speculation", "sometimes"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-queue", "many"])
    with pytest.raises(ValueError, match="block_size"):          # the dataclass validates, as before
        cli.engine_config(parser.parse_args(["--block-size", "3"]))
    assert cli.run(parser.parse_args(["--port", "70000", "--log-level", "error"])) == 2
    assert "port must be in" in capsys.readouterr().err


def test_a_field_no_flag_can_express_must_say_how():
    @dataclasses.dataclass(frozen=True)
    class Odd:
        tags: frozenset[str] = dataclasses.field(default_factory=frozenset, metadata={"help": "tags"})

    with pytest.raises(TypeError, match="from_flag"):
        cli.add_config_arguments(argparse.ArgumentParser(), Odd)
