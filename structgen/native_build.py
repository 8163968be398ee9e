"""Compiling a C source set into a cached shared library, once per source/flags/compiler.

Used by the CPU kernels (structgen/kernels/native.py) and the token-index walker (structgen/fsm/native.py). A library
lives in `<STRUCTGEN_CACHE_DIR>/<subdir>/<prefix><digest>.so`; the digest covers the compiler, the flags and every
source and header byte, so an edited source is rebuilt and a stale build is never loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from . import settings


def compiler() -> str | None:
    """The C compiler to use ($CC, Python's own CC, then cc/gcc on PATH), or None where there is none."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if shutil.which(cc.split()[0]):
        return cc
    return shutil.which("cc") or shutil.which("gcc")


def build_library(cc: str, sources: list[Path], headers: list[Path], cflags: list[str], *, subdir: str,
                  prefix: str) -> Path:
    """The path of `sources` compiled with `cflags` (built now unless the cache holds this exact build)."""
    digest = hashlib.sha256(" ".join([cc, *cflags]).encode())
    for src in [*sources, *headers]:
        digest.update(src.read_bytes())
    out_dir = settings.cache_dir() / subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"{prefix}{digest.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    # Build to a private name, then rename: two processes starting at once never load a half-written file.
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_lib = Path(tmp) / lib.name
        cmd = [*cc.split(), *cflags, *map(str, sources), "-o", str(tmp_lib)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
        os.replace(tmp_lib, lib)
    for old in out_dir.glob(f"{prefix}*.so"):  # builds of older sources (unlinking a loaded library is safe)
        if old != lib:
            old.unlink(missing_ok=True)
    return lib
