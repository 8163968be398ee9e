"""The fingerprint of a run: everything that decides its outputs, so compare can say what differs between two.

It is built from what the server itself tells (GetServerInfo over gRPC, /get_server_info over HTTP: model name,
weights hash, tokenizer fingerprint, dtype, device, version, every EngineConfig field), never from what the
client assumes, so an in-process server and a remote one are fingerprinted the same way. To that it adds the
sampling the cases were sent with, the API, the concurrency (latency depends on it) and, for an in-process
server, the git commit of the checkout that ran it (a remote server's commit is not known; its version is).

`quantization` is read from the engine's settings ("none" where the engine has no such field), and stands at the
top level beside dtype because those two are the usual reasons a candidate differs.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

# Keys whose difference compare reports but that do not make two runs' outputs incomparable (resume refuses any).
_TOP_KEYS = ("model", "weights_hash", "tokenizer_fingerprint", "dtype", "quantization", "device",
             "structgen_version", "git_commit", "api", "concurrency")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the checkout this package runs from (+ "-dirty" with uncommitted changes); "" outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def build_fingerprint(server_info: dict, *, api: str, sampling: dict, concurrency: int, local: bool) -> dict:
    """The run's fingerprint from the server's own info (`send.*Sender.server_info()`)."""
    engine = dict(server_info.get("engine_config") or {})
    return {
        "model": server_info.get("model", ""),
        "weights_hash": server_info.get("weights_hash", "") or "unknown (the server did not tell)",
        "tokenizer_fingerprint": server_info.get("tokenizer_fingerprint", ""),
        "dtype": server_info.get("dtype", "") or str(engine.get("dtype", "")),
        "quantization": str(engine.get("quantization", "none")),
        "device": server_info.get("device", ""),
        "structgen_version": server_info.get("structgen_version", ""),
        "git_commit": git_commit() if local else "unknown (remote server)",
        "api": api,
        "concurrency": concurrency,
        "sampling": dict(sampling),
        "engine_config": engine,
    }


def flatten(fp: dict) -> dict[str, object]:
    """{"dtype": ..., "sampling.temperature": ..., "engine_config.max_num_seqs": ...}: one level, for diffs."""
    out: dict[str, object] = {}
    for key, value in fp.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    return out


def differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """[(key, a's value, b's value)] for every flattened key whose values differ (missing: None), the headline
    keys first, then the rest sorted."""
    fa, fb = flatten(a), flatten(b)
    keys = [k for k in _TOP_KEYS if k in fa or k in fb]
    keys += sorted((set(fa) | set(fb)) - set(keys))
    return [(k, fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)]
