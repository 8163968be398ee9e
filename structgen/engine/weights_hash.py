"""The weights fingerprint: a sha256 over a model's weight files, so a run can say which weights produced it.

Hashing ~540 MB of safetensors takes seconds, too slow for every GetServerInfo, so each file's digest is cached
in the structgen cache (`weights-hashes.json`) keyed by its resolved path, size and mtime: a rewritten file (new
mtime or size) is hashed again, an unchanged one never. The model's fingerprint is the sha256 of its files'
names and digests, so a folder's file set is part of it, and `config.json` is included (the same tensors under
another config are another model).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_CACHE_FILE = "weights-hashes.json"
_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt")
_CHUNK = 1 << 22
_lock = threading.Lock()


def model_path(model: str) -> Path:
    """Where `model` ("default", a folder or a file) lives on disk; the default model is converted if needed."""
    if model == "default":
        from ..assets import prepare_default_model

        return prepare_default_model()
    return Path(model).expanduser().resolve()


def weight_files(path: Path) -> list[Path]:
    """The files whose bytes define the model: a single file as is; a folder's weights and its config.json."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no model at {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES
                                                                   or p.name == "config.json"))
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise FileNotFoundError(f"no weight files (*.safetensors, *.gguf, *.bin) in {path}")
    return files


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _cache_path() -> Path:
    from .. import settings

    return settings.cache_dir() / _CACHE_FILE


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only costs a re-hash


def file_digest(path: Path) -> str:
    """sha256 of one file, from the cache when its path, size and mtime are unchanged."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    cache_file = _cache_path()
    with _lock:
        cached = _read_cache(cache_file).get(key)
    if cached:
        return cached
    digest = _file_digest(path)
    with _lock:
        data = _read_cache(cache_file)   # NOTE: re-read: another process may have added entries meanwhile
        data[key] = digest
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, cache_file)      # atomic: a reader sees the old file or the new one, never half
    return digest


def _fingerprint_of(files: tuple[tuple[str, str], ...]) -> str:
    h = hashlib.sha256()
    for name, digest in files:
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def weights_fingerprint(model: str) -> str:
    """sha256 (hex) over the names and digests of `model`'s weight files and config.json.

    Raises FileNotFoundError for a path that holds no model."""
    files = weight_files(model_path(model))
    return _fingerprint_of(tuple((p.name, file_digest(p)) for p in files))
