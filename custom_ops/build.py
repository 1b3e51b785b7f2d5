"""Builds the mnc_tf op library ``_mnc_ops.so`` from ``custom_ops/``.

Called by ``setup.py`` as ``build(os.path.join(<lib dir>, "mnc_tf", "ops"))`` and runnable
as ``python custom_ops/build.py`` (builds in place into ``mnc_tf/ops/``).

C++ is compiled with g++ and the flags of the installed TensorFlow (``tf.sysconfig``,
C++17). The CUDA kernels are compiled with nvcc and linked in (CUDA runtime linked
statically, so the library also loads where no GPU or CUDA toolkit is installed) only when
nvcc, a CUDA build of TensorFlow and the CUDA runtime headers/library are all present, and
by default only when TensorFlow also sees a GPU: a CPU-only machine gets the CPU-only
library that it can test. ``MNC_BUILD_CUDA=1`` forces the CUDA build (failing if it is
impossible), ``MNC_BUILD_CUDA=0`` forbids it. ``MNC_CUDA_ARCHS="80;90"`` overrides the GPU
architectures (default: those of the TensorFlow build that nvcc supports).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

LIBRARY_NAME = "_mnc_ops.so"
_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCE_DIR = os.path.join(_HERE, "roi_warp")
_CC_SOURCES = (
    "roi_warp_ops.cc",
    "roi_warp_kernels.cc",
    "../rle/rle_masks.cc",
    "../image/flip_image.cc",
)
_CU_SOURCES = ("roi_warp_kernels.cu.cc",)


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"[mnc_tf build] {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], verbose: bool) -> None:
    _log(verbose, " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"command failed with exit code {result.returncode}: {' '.join(cmd)}\n"
            f"{result.stdout}{result.stderr}"
        )


def _cuda_home(nvcc: str) -> str:
    """$CUDA_HOME, else the toolkit holding nvcc (a wrapper script may sit elsewhere)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for home in filter(None, candidates):
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return next(filter(None, candidates))


def _cuda_archs(tf, nvcc: str) -> list[str]:
    """Compute capabilities (e.g. "80") to build: $MNC_CUDA_ARCHS, else TF's ∩ nvcc's."""
    if os.environ.get("MNC_CUDA_ARCHS"):
        return re.findall(r"\d+", os.environ["MNC_CUDA_ARCHS"])
    wanted = tf.sysconfig.get_build_info().get("cuda_compute_capabilities", [])
    wanted = {re.sub(r"\D", "", arch) for arch in wanted}
    listed = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True).stdout
    supported = set(re.findall(r"sm_(\d+)", listed))
    archs = sorted(wanted & supported, key=int) or sorted(supported, key=int)[-1:]
    return archs


def _cuda_unavailable_reason(tf, nvcc: str | None, require_gpu: bool) -> str | None:
    """Why the CUDA kernels cannot (or, by default, should not) be built; None if they can."""
    if nvcc is None:
        return "nvcc not found on PATH"
    if not tf.test.is_built_with_cuda():
        return "the installed TensorFlow is not a CUDA build"
    home = _cuda_home(nvcc)
    for needed in ("include/cuda_runtime.h", "lib64/libcudart_static.a"):
        if not os.path.exists(os.path.join(home, needed)):
            return f"{os.path.join(home, needed)} not found (set CUDA_HOME)"
    if require_gpu and not tf.config.list_physical_devices("GPU"):
        return "TensorFlow sees no GPU (set MNC_BUILD_CUDA=1 to build the CUDA kernels anyway)"
    return None


def _want_cuda(tf, with_cuda: bool | None, nvcc: str | None) -> tuple[bool, str]:
    """(build CUDA?, the one log line saying what is built and why)."""
    env = os.environ.get("MNC_BUILD_CUDA", "").strip()
    if with_cuda is None and env in ("0", "1"):
        with_cuda = env == "1"
    if with_cuda is False:
        return False, "building CPU-only op library (CUDA disabled by caller or MNC_BUILD_CUDA=0)"
    reason = _cuda_unavailable_reason(tf, nvcc, require_gpu=with_cuda is None)
    if reason is None:
        return True, "building op library with CUDA kernels"
    if with_cuda:
        raise RuntimeError(f"CUDA build requested but impossible: {reason}")
    return False, f"building CPU-only op library: {reason}"


def build(output_dir: str, with_cuda: bool | None = None, verbose: bool = True) -> str:
    """Compiles the op library into ``output_dir`` and returns its path.

    Args:
      output_dir: folder that receives ``_mnc_ops.so`` (the package's ``mnc_tf/ops``).
      with_cuda: True requires the CUDA kernels, False skips them, None decides
        automatically (see the module docstring).
      verbose: print the decision and the compiler commands to stderr.
    """
    import tensorflow as tf  # imported here: importing this module must stay cheap

    cxx = os.environ.get("CXX", "g++")
    nvcc = shutil.which("nvcc")
    use_cuda, decision = _want_cuda(tf, with_cuda, nvcc)
    print(f"[mnc_tf build] {decision}", file=sys.stderr, flush=True)

    compile_flags = list(tf.sysconfig.get_compile_flags())
    link_flags = list(tf.sysconfig.get_link_flags())
    cxx_flags = ["-O3", "-fPIC", "-fopenmp-simd", "-I", _SOURCE_DIR]
    if platform.machine() in ("x86_64", "AMD64"):
        # TensorFlow's own x86 wheels require AVX; no FMA, so results round like TF's kernels.
        cxx_flags.append("-mavx")
    if use_cuda:
        cxx_flags.append("-DGOOGLE_CUDA=1")

    os.makedirs(output_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mnc_ops_build_") as tmp:
        objects = []
        for source in _CC_SOURCES:
            obj = os.path.join(tmp, os.path.basename(source) + ".o")
            src = os.path.join(_SOURCE_DIR, source)
            _run([cxx, "-c", src, "-o", obj, *compile_flags, *cxx_flags], verbose)
            objects.append(obj)
        extra_libs = []
        if use_cuda:
            home = _cuda_home(nvcc)
            gencode = []
            archs = _cuda_archs(tf, nvcc)
            for arch in archs:
                gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
            # PTX of the newest arch lets newer GPUs JIT-compile the kernels.
            gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
            for source in _CU_SOURCES:
                obj = os.path.join(tmp, source + ".o")
                src = os.path.join(_SOURCE_DIR, source)
                cmd = [nvcc, "-c", src, "-o", obj, "-x", "cu", "-std=c++17", "-O3"]
                cmd += ["--fmad=false", "-DGOOGLE_CUDA=1", "-Xcompiler", "-fPIC", *gencode]
                _run(cmd, verbose)
                objects.append(obj)
            lib_dir = os.path.join(home, "lib64")
            # Static runtime, its symbols kept local: the library needs no libcudart at load
            # time, and TensorFlow's global cudart stub cannot interpose on our calls.
            extra_libs = ["-L", lib_dir, "-lcudart_static", "-Wl,--exclude-libs,libcudart_static.a"]
            extra_libs += ["-ldl", "-lrt", "-lpthread"]
        tmp_lib = os.path.join(tmp, LIBRARY_NAME)
        # The CUDA runtime goes before TensorFlow's library, which exports a cudart stub of its
        # own CUDA version: our kernels must talk to the runtime of the nvcc that built them.
        _run([cxx, "-shared", "-o", tmp_lib, *objects, *extra_libs, *link_flags], verbose)
        target = os.path.join(output_dir, LIBRARY_NAME)
        # Copy then rename: a process that has the old library mapped keeps it intact.
        shutil.copyfile(tmp_lib, target + ".tmp")
        os.replace(target + ".tmp", target)
    _log(verbose, f"wrote {target}")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir",
        default=os.path.join(os.path.dirname(_HERE), "mnc_tf", "ops"),
        help="folder for _mnc_ops.so (default: mnc_tf/ops of this checkout)",
    )
    cuda = parser.add_mutually_exclusive_group()
    cuda.add_argument("--cuda", dest="with_cuda", action="store_true", default=None)
    cuda.add_argument("--no-cuda", dest="with_cuda", action="store_false")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    build(args.output_dir, with_cuda=args.with_cuda, verbose=not args.quiet)


if __name__ == "__main__":
    main()
