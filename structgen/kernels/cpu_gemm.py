"""`x @ weight.T` for a few rows of x on CPU through the native kernel (`cpu_skinny_gemm.c`, built by `native`).

Why: at 1-64 rows (decode and verify steps) MKL streams weights at 5-10 GB/s on this project's 2-core AVX2 machines,
and at 2-32 rows runs on one thread; the native kernel reads each weight row once for all rows of x and reaches
1.2-3.8x MKL's speed there (`benchmarks/bench_linear.py`).
"""

from __future__ import annotations

import torch

from . import native


def skinny_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """`x @ weight.T` for 2-d float32 CPU tensors via the native kernel, or None when it cannot take the call
    (kernels unavailable, another dtype or device, an inner size not a multiple of 8, autograd): use torch then."""
    if (x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu"
            or weight.device.type != "cpu" or x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]
            or x.shape[1] % 8):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return None  # no backward here: leave autograd's cases to torch
    lib = native.library()
    if lib is None:
        return None
    x = x.contiguous()
    weight = weight.contiguous()
    m, k = x.shape
    n = weight.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    lib.skinny_gemm(x.data_ptr(), m, k, weight.data_ptr(), n, y.data_ptr(), torch.get_num_threads())
    return y
