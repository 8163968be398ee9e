"""ServerConfig validation and API-key loading."""

from __future__ import annotations

import pytest

from structgen.server.config import ServerConfig, load_api_keys


def test_defaults_and_derived():
    cfg = ServerConfig(port=0)
    assert cfg.address == "127.0.0.1:0" and not cfg.auth_required
    assert ServerConfig(api_keys=frozenset({"k"})).auth_required


@pytest.mark.parametrize("bad", [
    dict(port=70000), dict(port=-1), dict(max_queue=0), dict(default_max_tokens=0),
    dict(default_max_tokens=5000, max_tokens_limit=4096), dict(drain_timeout_s=-1), dict(metrics_port=99999),
    dict(api_keys=frozenset({"has space"})), dict(api_keys=frozenset({""})),
])
def test_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        ServerConfig(**bad)


def test_api_keys_must_be_a_frozenset():
    with pytest.raises(TypeError):
        ServerConfig(api_keys={"k"})


def test_load_api_keys_from_file_and_env(tmp_path, monkeypatch):
    f = tmp_path / "keys"
    f.write_text("# team keys\nalpha\n\nbeta  # rotated 2024-05\n")
    monkeypatch.setenv("STRUCTGEN_API_KEYS", "gamma, delta")
    assert load_api_keys(f) == {"alpha", "beta", "gamma", "delta"}
    monkeypatch.delenv("STRUCTGEN_API_KEYS")
    assert load_api_keys(None) == frozenset()
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no keys"):
        load_api_keys(empty)
    with pytest.raises(FileNotFoundError):
        load_api_keys(tmp_path / "missing")
