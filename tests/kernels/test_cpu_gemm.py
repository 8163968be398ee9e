"""The native few-rows CPU matmul (structgen/kernels/cpu_skinny_gemm.c via cpu_gemm.py) against torch, and how the
native library is built (structgen/kernels/native.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from structgen.kernels import cpu_gemm, native


def _cpu_has_avx2_fma() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


needs_native = pytest.mark.skipif(not native.available(),
                                  reason=f"native CPU kernels unavailable: {native.unavailable_reason()}")


def test_builds_wherever_a_compiler_and_avx2_exist():
    # The engine's CPU decode speed rests on this kernel: on a machine that can build it, it must be built.
    if not (_cpu_has_avx2_fma() and (shutil.which("cc") or shutil.which("gcc"))):
        pytest.skip("no C compiler or no AVX2/FMA here: torch's matmul is used instead")
    assert native.available(), native.unavailable_reason()


@needs_native
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 12, 13, 31, 64])
@pytest.mark.parametrize("out_features,in_features", [(960, 576), (12, 8), (13, 16), (577, 40), (25, 1536)])
def test_matches_torch_for_every_tile_remainder(rows, out_features, in_features):
    # rows cover every 4-row tile remainder (0-3); out_features cover whole 12-row panels, a tail of single
    # columns, and fewer columns than one panel
    g = torch.Generator().manual_seed(rows * 1000 + out_features)
    x = torch.randn(rows, in_features, generator=g)
    w = torch.randn(out_features, in_features, generator=g)
    got = cpu_gemm.skinny_linear(x, w)
    assert got is not None and got.shape == (rows, out_features) and got.is_contiguous()
    torch.testing.assert_close(got, x @ w.t(), atol=1e-4, rtol=1e-4)


@needs_native
def test_reads_non_contiguous_inputs_correctly():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 8, generator=g).t()  # (8, 16), column-major
    w = torch.randn(32, 40, generator=g)[:, 8:24]  # (32, 16), rows strided
    got = cpu_gemm.skinny_linear(x, w)
    torch.testing.assert_close(got, x @ w.t(), atol=1e-4, rtol=1e-4)


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_same_result_for_any_thread_count(threads):
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(6, 64, generator=g), torch.randn(1000, 64, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = cpu_gemm.skinny_linear(x, w)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, x @ w.t(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", ["bf16", "inner_not_multiple_of_8", "shape_mismatch", "three_dims", "grad"])
def test_declines_what_it_cannot_take(case):
    # None sends the caller to torch; it must never compute a wrong product or read out of bounds
    x, w = torch.randn(4, 16), torch.randn(8, 16)
    if case == "bf16":
        x, w = x.bfloat16(), w.bfloat16()
    elif case == "inner_not_multiple_of_8":
        x, w = torch.randn(4, 12), torch.randn(8, 12)
    elif case == "shape_mismatch":
        w = torch.randn(8, 24)
    elif case == "three_dims":
        x = torch.randn(2, 4, 16)
    elif case == "grad":
        w.requires_grad_(True)
    assert cpu_gemm.skinny_linear(x, w) is None


def test_switched_off_by_the_setting(tmp_path):
    # a fresh process: the library is loaded once per process
    code = ("from structgen.kernels import cpu_gemm, native; import torch; "
            "from structgen.kernels.dispatch import backends_for; "
            "assert cpu_gemm.skinny_linear(torch.randn(2, 8), torch.randn(4, 8)) is None; "
            "assert backends_for(torch.device('cpu')).attention == 'torch'; "
            "print(native.unavailable_reason())")
    env = {"STRUCTGEN_CPU_KERNELS": "0", "STRUCTGEN_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "STRUCTGEN_CPU_KERNELS" in out.stdout


@needs_native
def test_builds_into_the_cache_dir_once(tmp_path):
    # a fresh cache: the first process compiles, a second one loads the same file without compiling
    code = ("from structgen import settings; from structgen.kernels import cpu_gemm; import torch; "
            "y = cpu_gemm.skinny_linear(torch.ones(2, 8), torch.ones(3, 8)); assert y is not None and "
            "bool((y == 8).all()); print(sorted(p.name for p in (settings.cache_dir() / 'kernels').iterdir()))")
    env = {"STRUCTGEN_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    lib = next((tmp_path / "kernels").glob(f"{native.LIB_PREFIX}*.so"))
    mtime = lib.stat().st_mtime_ns
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout and lib.name in first.stdout  # one library, no leftover temp folders
    assert lib.stat().st_mtime_ns == mtime


def test_without_a_compiler_torch_takes_over_and_the_model_still_runs(tmp_path):
    # a machine with no C compiler: no build, a stated reason, and a forward that still matches F.linear
    code = ("import torch; from structgen.kernels import native; "
            "from structgen.kernels.dispatch import backends_for; "
            "x, w = torch.randn(3, 16), torch.randn(5, 16); "
            "torch.testing.assert_close(backends_for('cpu').linear(x, w), torch.nn.functional.linear(x, w)); "
            "assert backends_for(torch.device('cpu')).attention == 'torch'; print(native.unavailable_reason())")
    env = {"STRUCTGEN_CACHE_DIR": str(tmp_path), "PATH": str(tmp_path / "no-bin")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no C compiler" in out.stdout
    assert "native CPU kernels unavailable" in out.stderr  # said once, as a warning
    assert not list(tmp_path.glob("kernels/*.so"))
