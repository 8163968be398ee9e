"""The weights fingerprint: stable for unchanged files, new for changed ones, cached on disk by path+size+mtime."""

from __future__ import annotations

import json
import os

import pytest

from structgen.engine import weights_hash


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x00" * 1000)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "README.md").write_text("not part of the model")
    return folder


def test_fingerprint_is_stable_cached_and_follows_the_files(model_dir, tmp_path):
    first = weights_hash.weights_fingerprint(str(model_dir))
    assert len(first) == 64 and weights_hash.weights_fingerprint(str(model_dir)) == first
    cache = json.loads((tmp_path / "cache" / "weights-hashes.json").read_text())
    assert len(cache) == 2 and all(str(model_dir) in key for key in cache)   # the weights and config.json
    (model_dir / "README.md").write_text("changed")
    assert weights_hash.weights_fingerprint(str(model_dir)) == first          # not a model file
    (model_dir / "config.json").write_text('{"hidden_size": 16}')
    assert weights_hash.weights_fingerprint(str(model_dir)) != first
    (model_dir / "config.json").write_text('{"hidden_size": 8}')
    assert weights_hash.weights_fingerprint(str(model_dir)) == first          # same bytes, same fingerprint


def test_a_rewritten_file_of_the_same_size_is_hashed_again(model_dir):
    first = weights_hash.weights_fingerprint(str(model_dir))
    path = model_dir / "model.safetensors"
    st = path.stat()
    path.write_bytes(b"\x01" * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert weights_hash.weights_fingerprint(str(model_dir)) != first


def test_no_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        weights_hash.weights_fingerprint(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no model at"):
        weights_hash.weights_fingerprint(str(tmp_path / "missing"))
