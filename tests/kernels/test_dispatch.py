"""structgen/kernels/dispatch.py: which kernel each device runs (bitmask, attention default and fallback, few-row
matmuls), resolved once per device type, and the few-row matmul paths against F.linear."""

from __future__ import annotations

import pytest
import torch

from structgen.kernels import dispatch
from structgen.kernels.bitmask import apply_token_bitmask_reference, apply_token_bitmask_triton
from structgen.kernels.dispatch import NATIVE_ROWS, SMALL_ROWS, backends_for


@pytest.mark.parametrize("device_type,triton,native,bitmask,attention,native_rows,weight_major_rows", [
    ("cuda", True, True, apply_token_bitmask_triton, "triton", 0, 0),
    ("cuda", False, True, apply_token_bitmask_reference, "torch", 0, 0),
    ("cpu", True, True, apply_token_bitmask_reference, "native", NATIVE_ROWS, SMALL_ROWS),
    ("cpu", True, False, apply_token_bitmask_reference, "torch", 0, SMALL_ROWS),
    ("mps", True, True, apply_token_bitmask_reference, "torch", 0, 0),
])
def test_choices_per_device(monkeypatch, device_type, triton, native, bitmask, attention, native_rows,
                            weight_major_rows):
    monkeypatch.setattr(dispatch, "triton_available", lambda: triton)
    monkeypatch.setattr(dispatch.native, "available", lambda: native)
    got = dispatch._resolve.__wrapped__(device_type)  # uncached: the cached one holds this machine's answer
    assert got.device_type == device_type
    assert got.apply_token_bitmask is bitmask
    assert got.attention == attention
    assert (got.native_gemm_rows, got.weight_major_rows) == (native_rows, weight_major_rows)


def test_resolved_once_per_device_type():
    assert backends_for("cpu") is backends_for(torch.device("cpu"))
    if torch.cuda.is_available():
        assert backends_for("cuda") is backends_for(torch.device("cuda", 0))


def test_native_attention_falls_back_to_torch_for_what_the_kernel_refuses(monkeypatch):
    monkeypatch.setattr(dispatch.native, "available", lambda: True)
    cpu = dispatch._resolve.__wrapped__("cpu")
    assert cpu.attention_for(None, 9, 3, 64, 16, torch.float32) == "native"
    assert cpu.attention_for(None, 9, 3, 64, 16, torch.bfloat16) == "torch"
    assert cpu.attention_for("native", 9, 3, 60, 16, torch.float32) == "torch"  # head_dim not a multiple of 8
    assert cpu.attention_for("torch", 9, 3, 64, 16, torch.float32) == "torch"
    assert cpu.attention_for("triton", 9, 3, 64, 16, torch.float32) == "triton"  # asked for: not second-guessed
    monkeypatch.setattr(dispatch.native, "available", lambda: False)
    assert cpu.attention_for("native", 9, 3, 64, 16, torch.float32) == "torch"  # not built here


def test_apply_token_bitmask_uses_the_kernel_of_the_logits_device():
    logits = torch.randn(3, 70)
    mask = torch.randint(-2**31, 2**31 - 1, (3, 3), dtype=torch.int32)
    want = apply_token_bitmask_reference(logits.clone(), mask)
    got = dispatch.apply_token_bitmask_(logits, mask)
    assert got is logits
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("rows", [1, 2, 5, 32, 33, 64, 65, 70])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("native", [True, False])
def test_linear_matches_f_linear_at_every_row_count(rows, bias, native, monkeypatch):
    # (moved from tests/engine/test_model.py with the policy) KernelBackends.linear takes other products for few
    # rows on CPU (the native kernel up to NATIVE_ROWS, else weight-major up to SMALL_ROWS); whichever runs, the
    # result must not move
    if not native:
        monkeypatch.setattr(dispatch, "skinny_linear", lambda x, w: None)
    g = torch.Generator().manual_seed(rows)
    x, w = torch.randn(rows, 48, generator=g), torch.randn(96, 48, generator=g)
    b = torch.randn(96, generator=g) if bias else None
    got = backends_for("cpu").linear(x, w, b)
    assert got.shape == (rows, 96) and got.is_contiguous()
    torch.testing.assert_close(got, torch.nn.functional.linear(x, w, b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("native_rows,weight_major_rows", [(NATIVE_ROWS, SMALL_ROWS), (0, SMALL_ROWS), (0, 0)])
def test_every_policy_matches_f_linear(native_rows, weight_major_rows):
    # the policies of a CPU with and without the native kernels, and of CUDA (F.linear always), on CPU tensors
    base = backends_for("cpu")
    kernels = dispatch.KernelBackends("cpu", base.apply_token_bitmask, "torch", native_rows, weight_major_rows)
    g = torch.Generator().manual_seed(native_rows + weight_major_rows)
    w, b = torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    for rows in (0, 1, 2, 31, 32, 33, 64, 65):
        x = torch.randn(rows, 24, generator=g)
        torch.testing.assert_close(kernels.linear(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5,
                                   rtol=1e-5)
