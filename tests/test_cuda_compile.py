"""The CUDA sources compile (and, where a GPU is present, the standalone check passes).

On CPU-only machines the CUDA code is compiled here (with nvcc) and run on the CPU by
tests/test_cuda_emulation.py; the TF-level GPU tests (tests/test_roi_warp_op.py::
test_gpu_matches_cpu, tests/test_cuda_emulation.py::test_gpu_op_matches_cpu_op) need a GPU
visible to TensorFlow. README "GPU users" lists them all.
"""

import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = os.path.join(REPO, "custom_ops", "roi_warp")
NVCC = shutil.which("nvcc")
# One architecture keeps the test fast; the build compiles all of TensorFlow's.
ARCH = ["-gencode", "arch=compute_80,code=sm_80"]
NVCC_FLAGS = ["-std=c++17", "-O3", "--fmad=false", "-DGOOGLE_CUDA=1", *ARCH]

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")


def run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}{result.stderr}"
    return result


def gpu_present():
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


@needs_nvcc
def test_cuda_kernels_compile(tmp_path):
    obj = tmp_path / "roi_warp_kernels.cu.o"
    cmd = [NVCC, "-c", "-x", "cu", "roi_warp_kernels.cu.cc", "-o", str(obj), *NVCC_FLAGS]
    run(cmd + ["-Xcompiler", "-fPIC"], cwd=SOURCES)
    assert obj.stat().st_size > 0


@needs_nvcc
def test_tf_kernel_gpu_registration_compiles():
    # The GOOGLE_CUDA part of the TF kernel file (GPU OpKernels, stream access) is plain C++.
    import tensorflow as tf

    cmd = [os.environ.get("CXX", "g++"), "-fsyntax-only", "-w", "-DGOOGLE_CUDA=1", "-I", "."]
    run(cmd + tf.sysconfig.get_compile_flags() + ["roi_warp_kernels.cc"], cwd=SOURCES)


def documented_standalone_commands():
    """The shell lines of custom_ops/README.md's standalone check, as written there."""
    with open(os.path.join(REPO, "custom_ops", "README.md")) as f:
        readme = f.read()
    block = re.search(r"\n((?:    .*\n)+)", readme[readme.index("Standalone check") :])
    lines = [line.strip().split("  #")[0].strip() for line in block.group(1).splitlines()]
    assert lines[0] == "cd custom_ops/roi_warp/standalone" and lines[1].startswith("nvcc ")
    assert lines[2] == "./roi_warp_check"
    return lines


@needs_nvcc
def test_standalone_check_builds_and_runs_where_a_gpu_is_present(tmp_path):
    # The documented commands, run as written in a copy of the sources (the binary stays out of
    # the tree); the nvcc line keeps the flags the CUDA build uses (--fmad=false).
    cd, build, check = documented_standalone_commands()
    assert all(flag in build.split() for flag in NVCC_FLAGS if flag not in ARCH)
    shutil.copytree(SOURCES, tmp_path / "custom_ops" / "roi_warp")
    workdir = tmp_path / cd.split()[1]
    run(["bash", "-c", build], cwd=str(workdir))
    assert (workdir / "roi_warp_check").exists()
    if not gpu_present():
        pytest.skip("built the standalone CUDA check; no GPU (nvidia-smi -L) to run it on")
    result = run(["bash", "-c", check], cwd=str(workdir))
    assert "OK" in result.stdout


def test_readme_gpu_section_names_existing_tests_and_commands():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("## GPU users") :]
    section = section[: section.index("\n## ", 1)]
    assert 'pip install -r requirements.txt "tensorflow[and-cuda]==2.21.0"' in section
    assert "MNC_BUILD_CUDA=1 python3 -m pip install --no-build-isolation -e ." in section
    for path in re.findall(r"(?:tests|benchmarks|custom_ops)/[\w./-]+\.(?:py|h|cc)", section):
        assert os.path.exists(os.path.join(REPO, path)), path
    tests = re.findall(r"(tests/\w+\.py)::(\w+)", section)
    assert len(tests) == 2
    for path, name in tests:
        with open(os.path.join(REPO, path)) as f:
            assert f"def {name}(" in f.read(), (path, name)
