"""Which kernel runs where: every backend choice, made once per device type.

`backends_for(device)` returns a frozen `KernelBackends`; the model and the runner use what it resolved instead of
asking at each call.

| device | bitmask | attention (default) | few-row matmul |
| --- | --- | --- | --- |
| CUDA, Triton installed | Triton | "triton" | F.linear |
| CUDA, no Triton | torch reference | "torch" | F.linear |
| CPU, native kernels built | torch reference | "native" | native kernel 1..NATIVE_ROWS rows |
| CPU, no native kernels | torch reference | "torch" | weight-major 2..SMALL_ROWS rows |

STRUCTGEN_CPU_KERNELS=0 (read by `native`) makes a CPU the last row. A request for "native" attention falls back
to "torch" for a dtype or shape the kernel does not take (`KernelBackends.attention_for`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import cpu_attention, native
from .bitmask import apply_token_bitmask_reference, apply_token_bitmask_triton
from .cpu_gemm import skinny_linear

# On CPU, a decode or verify step multiplies a few rows by every weight matrix, where MKL streams weights at 5-10
# GB/s (at 2-32 rows it even runs `x @ W.T` on one thread). The native kernel (`cpu_gemm`) takes those products up
# to NATIVE_ROWS rows; without it, the weight-major product `(W @ x.T).T` (split over W's rows across threads) takes
# 2..SMALL_ROWS rows. `benchmarks/bench_linear.py` measures all three (SmolLM2-135M shapes, 2 AVX2 cores).
# F.linear keeps prefill chunks, where MKL runs at this CPU's matmul peak.
NATIVE_ROWS = 64
SMALL_ROWS = 32

BitmaskFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether Triton imports here (checked once per process)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class KernelBackends:
    """The kernels one device type runs. Build with `backends_for`; fields are what it decided.

    apply_token_bitmask: (logits (B, V) float, bitmask (B, W) int32 on the same device) -> logits, masked in
        place (the contract of `structgen.kernels.bitmask`).
    attention: the default paged-attention backend, one of `structgen.kernels.attention.BACKENDS`.
    native_gemm_rows: products of 1..native_gemm_rows rows try the native kernel first (0 = never).
    weight_major_rows: products of 2..weight_major_rows rows the native kernel declined run weight-major (0 = never).
    """

    device_type: str
    apply_token_bitmask: BitmaskFn
    attention: str
    native_gemm_rows: int = 0
    weight_major_rows: int = 0

    def attention_for(self, requested: str | None, num_heads: int, num_kv_heads: int, head_dim: int,
                      block_size: int, dtype: torch.dtype) -> str:
        """The backend a model of this shape runs: `requested` (None = this device's default), except "native"
        becomes "torch" for a dtype or shape `cpu_attention.supports` refuses (or where it is not built)."""
        backend = requested or self.attention
        if backend == "native" and not cpu_attention.supports(num_heads, num_kv_heads, head_dim, block_size, dtype):
            return "torch"
        return backend

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """F.linear(x, weight, bias) for 2-d x (rows, in) and weight (out, in) on this device; returns (rows, out),
        contiguous, taking the few-row paths above when x has few rows."""
        rows = x.shape[0]
        if rows > max(self.native_gemm_rows, self.weight_major_rows):
            return F.linear(x, weight, bias)
        y = skinny_linear(x, weight) if rows <= self.native_gemm_rows else None  # None: the kernel declined
        if y is None:
            if rows < 2 or rows > self.weight_major_rows:
                return F.linear(x, weight, bias)
            y = torch.mm(weight, x.t()).t().contiguous()  # (rows, out)
        return y if bias is None else y.add_(bias)


def backends_for(device: torch.device | str) -> KernelBackends:
    """The kernels of `device`'s type, resolved on the first call for that type (which may build the native CPU
    kernels) and shared afterwards."""
    return _resolve(torch.device(device).type)


@functools.lru_cache(maxsize=None)
def _resolve(device_type: str) -> KernelBackends:
    if device_type == "cuda":
        if triton_available():
            return KernelBackends(device_type, apply_token_bitmask_triton, "triton")
        return KernelBackends(device_type, apply_token_bitmask_reference, "torch")
    if device_type == "cpu":
        has_native = native.available()
        return KernelBackends(device_type, apply_token_bitmask_reference, "native" if has_native else "torch",
                              native_gemm_rows=NATIVE_ROWS if has_native else 0, weight_major_rows=SMALL_ROWS)
    return KernelBackends(device_type, apply_token_bitmask_reference, "torch")


def apply_token_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """Mask `logits` (B, V) in place with `bitmask` (B, W) int32 using the kernel of the logits' device; returns
    logits. A caller with a fixed device keeps `backends_for(device).apply_token_bitmask` instead."""
    return backends_for(logits.device).apply_token_bitmask(logits, bitmask)
