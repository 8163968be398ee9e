"""Compiling a C source set into a cached shared library, once per source/flags/compiler, and loading it once.

Used by the CPU kernels (structgen/kernels/native.py) and the token-index walker (structgen/fsm/native.py). A library
lives in `<STRUCTGEN_CACHE_DIR>/<subdir>/<prefix><digest>.so`; the digest covers the compiler, the flags and every
source and header byte, so an edited source is rebuilt and a stale build is never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from pathlib import Path

from . import settings

log = logging.getLogger(__name__)


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


class NativeLibrary:
    """A C library built and loaded once per process, on first use, or the reason it cannot be.

    Args:
        what: how log lines name it ("native CPU kernels"). fallback: what runs instead, for the warning.
        switch: the STRUCTGEN_* boolean setting that turns it off. load(path) -> ctypes.CDLL: load the built file,
            check it runs on this CPU and declare its functions (raise to refuse).
        sources, headers, cflags, subdir, prefix: as build_library takes them.
    """

    def __init__(self, what: str, fallback: str, switch: str, load, sources: list[Path], headers: list[Path],
                 cflags: list[str], *, subdir: str, prefix: str):
        self.what, self.fallback, self.switch, self._load = what, fallback, switch, load
        self._build_args = (sources, headers, cflags)
        self._subdir, self._prefix = subdir, prefix
        self._lock = threading.Lock()
        self._lib = None
        self._tried = False
        self._reason: str | None = None

    def get(self):
        """The loaded library (built on the first call), or None where it cannot run (see reason())."""
        if self._tried:
            return self._lib
        with self._lock:
            if self._tried:
                return self._lib
            try:
                if not settings.get(self.switch):
                    raise RuntimeError(f"turned off by {self.switch}=0")
                cc = compiler()
                if cc is None:
                    raise RuntimeError("no C compiler (cc/gcc) on PATH")
                path = build_library(cc, *self._build_args, subdir=self._subdir, prefix=self._prefix)
                self._lib = self._load(path)
                log.info("%s loaded from %s", self.what, path)
            except Exception as e:  # any failure leaves the fallback in charge; say why once
                self._reason = str(e)
                (log.info if not settings.get(self.switch) else log.warning)(
                    "%s unavailable, %s: %s", self.what, self.fallback, e)
            self._tried = True
        return self._lib

    def reason(self) -> str | None:
        """Why get() returns None (None when it does not)."""
        self.get()
        return self._reason

    def reset(self) -> None:
        """Forget the outcome, so the next get() tries again (tests that flip the switch)."""
        with self._lock:
            self._lib, self._tried, self._reason = None, False, None
