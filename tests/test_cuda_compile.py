"""The CUDA sources compile (and, where a GPU is present, the standalone check passes).

On CPU-only machines with nvcc this is the only check of the CUDA code; the TF-level GPU
test (tests/test_roi_warp_op.py::test_gpu_matches_cpu) needs a GPU visible to TensorFlow.
"""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = os.path.join(REPO, "custom_ops", "roi_warp")
NVCC = shutil.which("nvcc")
# One architecture keeps the test fast; the build compiles all of TensorFlow's.
ARCH = ["-gencode", "arch=compute_80,code=sm_80"]
NVCC_FLAGS = ["-std=c++17", "-O3", "--fmad=false", "-DGOOGLE_CUDA=1", *ARCH]

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")


def run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}{result.stderr}"
    return result


def gpu_present():
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def test_cuda_kernels_compile(tmp_path):
    obj = tmp_path / "roi_warp_kernels.cu.o"
    cmd = [NVCC, "-c", "-x", "cu", "roi_warp_kernels.cu.cc", "-o", str(obj), *NVCC_FLAGS]
    run(cmd + ["-Xcompiler", "-fPIC"], cwd=SOURCES)
    assert obj.stat().st_size > 0


def test_tf_kernel_gpu_registration_compiles():
    # The GOOGLE_CUDA part of the TF kernel file (GPU OpKernels, stream access) is plain C++.
    import tensorflow as tf

    cmd = [os.environ.get("CXX", "g++"), "-fsyntax-only", "-w", "-DGOOGLE_CUDA=1", "-I", "."]
    run(cmd + tf.sysconfig.get_compile_flags() + ["roi_warp_kernels.cc"], cwd=SOURCES)


def test_standalone_check_builds_and_runs_where_a_gpu_is_present(tmp_path):
    exe = tmp_path / "roi_warp_check"
    sources = ["roi_warp_check.cu", "roi_warp_check_cpu.cc"]
    run([NVCC, *sources, "-o", str(exe), *NVCC_FLAGS], cwd=os.path.join(SOURCES, "standalone"))
    assert exe.exists()
    if not gpu_present():
        pytest.skip("built the standalone CUDA check; no GPU (nvidia-smi -L) to run it on")
    result = run([str(exe)], cwd=str(tmp_path))
    assert "OK" in result.stdout
