"""The native CPU kernels (`cpu_*.c` in this folder), compiled on first use with the system C compiler.

One shared library holds them all: `cpu_skinny_gemm.c` (matmuls of a few rows, used by `cpu_gemm.skinny_linear`)
and `cpu_paged_attention.c` (decode/verify attention straight from the KV blocks, used by `cpu_attention`). It is
built once per source/compiler into `<STRUCTGEN_CACHE_DIR>/kernels/` (a second or two; structgen/native_build.py)
and loaded with ctypes, which drops the GIL for each call. The OpenMP runtime it links is the one torch already loaded (same soname), so
the kernels share torch's thread pool instead of adding a second one.

`library()` returns None when the kernels cannot run here (no compiler, a CPU without AVX2/FMA, a failed build,
STRUCTGEN_CPU_KERNELS=0); callers then use torch, and `unavailable_reason()` says why.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from .. import native_build

SOURCES = [Path(__file__).with_name("cpu_skinny_gemm.c"), Path(__file__).with_name("cpu_paged_attention.c")]
HEADERS = [Path(__file__).with_name("cpu_simd.h")]  # included by the sources: part of the build key
CFLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno"]
LIB_PREFIX = "structgen_cpu-"


def _load(path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if not lib.skinny_gemm_supported():
        raise RuntimeError("this CPU lacks AVX2/FMA")
    p, n, i, f = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
    lib.skinny_gemm.argtypes = [p, n, n, p, n, p, i]
    lib.skinny_gemm.restype = None
    lib.paged_attention_rows.argtypes = [p, n, n, p, p, n, p, n, i, p, p, p, n, i, i, i, f, p, n, n, i]
    lib.paged_attention_rows.restype = None
    return lib


_LIBRARY = native_build.NativeLibrary("native CPU kernels", "CPU decode steps use torch (slower)",
                                      "STRUCTGEN_CPU_KERNELS", _load, SOURCES, HEADERS, CFLAGS, subdir="kernels",
                                      prefix=LIB_PREFIX)


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on the first call; None where they cannot run (see unavailable_reason())."""
    return _LIBRARY.get()


def available() -> bool:
    """Whether the native kernels are built and usable here (builds them on the first call)."""
    return library() is not None


def unavailable_reason() -> str | None:
    return _LIBRARY.reason()


if __name__ == "__main__":  # `python -m structgen.kernels.native`: build now and say what CPU steps will use
    if available():
        print("[setup] native CPU kernels: built")
    else:
        print(f"[setup] native CPU kernels unavailable ({unavailable_reason()}); torch will be used")
