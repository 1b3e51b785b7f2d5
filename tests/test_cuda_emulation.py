"""The RoI warp CUDA kernels' own source, run on the CPU, against the CPU kernels.

``custom_ops/roi_warp/roi_warp_kernels.cu.cc`` is compiled by g++ against the test-only
emulation header ``tests/cuda_emu/cuda_emu.h`` (threads of a block as fibers with a real
``__syncthreads`` barrier, shared memory poisoned per block, guard pages after device
buffers; see its top comment). The only change made to the source is the launch syntax:
each ``kernel<<<grid, block, shmem, stream>>>(args)`` becomes
``::cuda_emu::Launch(kernel, grid, block, shmem, stream)(args)``. The driver
(``tests/cuda_emu/roi_warp_emu_driver.cc``) calls the launchers as the TF GPU kernels do, and
every case of ``tests/test_roi_warp_op.py`` is compared with the CPU op (``MncRoiWarp`` /
``MncRoiWarpGrad`` on ``/CPU:0``): forward values and argmax bit for bit, gradients to float
rounding (the CUDA backward sums in another order: atomics, block reductions). Each case runs
with the source's grid cap and with a cap of 3 blocks so the grid-stride loops wrap, and with
three thread orders between barriers (ascending, descending, random), under which a missing
barrier reads unwritten (NaN-poisoned) or already-overwritten shared memory.
"""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from test_roi_warp_op import BOX_KINDS, mixed_inputs, random_boxes

from mnc_tf.ops import load_library

OPS = load_library()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = os.path.join(REPO, "custom_ops", "roi_warp")
EMU = os.path.join(REPO, "tests", "cuda_emu")
CXX = os.environ.get("CXX", "g++")
ORDERS = ["ascending", "descending", "random:7"]
SOURCE_GRID_CAP = 1 << 20  # NumBlocks' default in roi_warp_kernels.cu.cc
WRAP_GRID_CAP = 3
LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)

pytestmark = pytest.mark.skipif(shutil.which(CXX) is None, reason=f"no C++ compiler ({CXX})")


@pytest.fixture(autouse=True)
def _clear_keras_session():
    """Overrides conftest's per-test Keras reset (0.4 s each): nothing here uses Keras."""
    yield


def emulated_source(path):
    """The .cu.cc text with each <<<...>>> launch rewritten to ::cuda_emu::Launch(...)."""
    with open(path) as f:
        source = f.read()
    rewritten, count = LAUNCH.subn(
        lambda m: f"::cuda_emu::Launch({m.group(1)}, {m.group(2)})(", source
    )
    assert count == source.count("<<<") > 0, "a kernel launch the rewrite does not handle"
    # Newlines inside <<<...>>> are kept, so #line 1 keeps every line number.
    return f'#line 1 "{path}"\n{rewritten}'


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    build = tmp_path_factory.mktemp("cuda_emu_build")
    kernels = os.path.join(SOURCES, "roi_warp_kernels.cu.cc")
    (build / "roi_warp_kernels.emu.cc").write_text(emulated_source(kernels))
    exe = build / "roi_warp_emu_driver"
    cmd = [CXX, "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Wno-sign-compare"]
    cmd += ["-DGOOGLE_CUDA=1", "-DMNC_ROI_WARP_MAX_BLOCKS=roi_warp_emu_max_blocks"]
    cmd += ["-I", EMU, "-I", SOURCES, "-I", str(build)]
    cmd += [os.path.join(EMU, "roi_warp_emu_driver.cc"), "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    check_shared_memory_is_poisoned(str(exe), "mnc_roi_warp::")
    return str(exe)


def check_shared_memory_is_poisoned(exe, namespace):
    """Every function-local static of ``namespace`` (its __shared__ arrays) lies in the
    section cuda_emu.h poisons per block; GCC puts those of function templates elsewhere."""
    nm = shutil.which("nm")
    assert nm, "nm not found: install binutils (g++ needs it too)"
    listing = subprocess.run([nm, "-C", exe], capture_output=True, text=True, check=True).stdout
    symbols = {}
    for line in listing.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] and parts[1] in "bBdDuV":  # data symbols
            symbols[parts[2]] = int(parts[0], 16)
    begin, end = symbols["__start_cuda_emu_shared"], symbols["__stop_cuda_emu_shared"]
    local_static = re.compile(r"\)::[A-Za-z_]\w*$")  # function(args)::variable
    statics = {
        name: address
        for name, address in symbols.items()
        if name.startswith(namespace) and local_static.search(name)
    }
    assert statics, f"no __shared__ variable of {namespace} found in {exe}"
    outside = [name for name, address in statics.items() if not begin <= address < end]
    assert not outside, f"shared memory cuda_emu cannot poison (template kernel?): {outside}"


def run_emulated(driver, tmp_path, features, boxes, box_indices, grads, crop, pooled, scale, cap):
    """Forward and backward of the emulated CUDA launchers, one result dict per thread order."""
    features = np.ascontiguousarray(features, np.float32)
    boxes = np.ascontiguousarray(boxes, np.float32).reshape(-1, 4)
    box_indices = np.ascontiguousarray(box_indices, np.int32)
    grads = np.ascontiguousarray(grads, np.float32)
    features.tofile(tmp_path / "features.f32")
    boxes.tofile(tmp_path / "boxes.f32")
    box_indices.tofile(tmp_path / "box_indices.i32")
    grads.tofile(tmp_path / "grads.f32")
    b, h, w, c = features.shape
    r = len(boxes)
    args = [driver, str(tmp_path), *map(str, (b, h, w, c, r, crop, pooled)), repr(scale)]
    result = subprocess.run([*args, str(cap), *ORDERS], capture_output=True, text=True)
    assert result.returncode == 0, f"emulated CUDA run failed:\n{result.stdout}{result.stderr}"
    out_shape = (r, pooled, pooled, c)
    results = {}
    for order in ORDERS:
        prefix = tmp_path / order.replace(":", "_")

        def load(name, dtype, shape, prefix=prefix):
            return np.fromfile(f"{prefix}.{name}", dtype).reshape(shape)

        results[order] = {
            "output": load("output.f32", np.float32, out_shape),
            "argmax": load("argmax.u8", np.uint8, out_shape),
            "grad_features": load("grad_features.f32", np.float32, features.shape),
            "grad_boxes": load("grad_boxes.f32", np.float32, boxes.shape),
        }
    return results


def run_op(features, boxes, box_indices, grads, crop, pooled, scale, device="/CPU:0"):
    """MncRoiWarp and MncRoiWarpGrad on ``device``; fails if TF placed them elsewhere."""
    with tf.device(device):
        output, argmax = OPS.mnc_roi_warp(features, boxes, box_indices, crop, pooled, scale)
        grad_features, grad_boxes = OPS.mnc_roi_warp_grad(
            grads, features, boxes, box_indices, argmax, crop, pooled, scale
        )
    for t in (output, grad_features):
        assert t.device.endswith(device.lstrip("/")), (
            f"the op ran on {t.device}, not {device}: the op library has no kernel for that "
            "device (GPU: rebuild with MNC_BUILD_CUDA=1, see README 'GPU users')"
        )
    return {
        "output": output.numpy(),
        "argmax": argmax.numpy(),
        "grad_features": grad_features.numpy(),
        "grad_boxes": grad_boxes.numpy(),
    }


def hand_case():
    features = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    boxes = np.array([[0, 0, 2, 2], [0.5, 0.5, 1.5, 1.5], [0, 0, 2, 2]], np.float32)
    return features, boxes, np.zeros(3, np.int32)


def kind_case(kind):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((2, 7, 5, 3)).astype(np.float32)
    boxes = random_boxes(rng, 8, 7, 5, 0.5, kind)
    return features, boxes, rng.integers(0, 2, 8).astype(np.int32)


def unit_case(shape):
    rng = np.random.default_rng(4)
    features = rng.standard_normal(shape).astype(np.float32)
    boxes = random_boxes(rng, 5, 4, 4, 1 / 16, "partly_outside")
    return features, boxes, rng.integers(0, shape[0], 5).astype(np.int32)


def mixed(**kwargs):
    return tuple(t.numpy() for t in mixed_inputs(**kwargs))


# (id, inputs, crop_size, pooled_size, spatial_scale): the inputs of tests/test_roi_warp_op.py.
CASES = [
    *[
        (f"mixed_c13_{crop}_{pooled}", lambda: mixed(), crop, pooled, 1 / 16)
        for crop, pooled in [(28, 14), (8, 4), (9, 3), (6, 6), (4, 1), (1, 1)]
    ],
    *[(f"kind_{kind}", lambda kind=kind: kind_case(kind), 8, 4, 0.5) for kind in BOX_KINDS],
    ("hand_3_3", hand_case, 3, 3, 1.0),
    ("hand_3_1", hand_case, 3, 1, 1.0),
    *[
        (
            f"mixed_c{c}_{crop}_{pooled}",
            lambda c=c: mixed(seed=11, channels=c),
            crop,
            pooled,
            1 / 16,
        )
        for crop, pooled, c in [(28, 14, 21), (8, 4, 16), (9, 3, 9)]
    ],
    (
        "no_boxes",
        lambda: (
            np.random.default_rng(0).standard_normal((2, 5, 6, 4)).astype(np.float32),
            np.zeros([0, 4], np.float32),
            np.zeros([0], np.int32),
        ),
        4,
        2,
        1 / 16,
    ),
    *[
        (f"unit_{'x'.join(map(str, s))}", lambda s=s: unit_case(s), 4, 2, 1 / 16)
        for s in [(2, 1, 6, 3), (2, 5, 1, 3), (1, 1, 1, 2)]
    ],
    (
        "large_finite_boxes",
        lambda: (
            np.random.default_rng(2).standard_normal((1, 4, 4, 2)).astype(np.float32),
            np.array([[-3e38, -3e38, 3e38, 3e38], [1e30, 1e30, -1e30, 5.0]], np.float32),
            np.zeros(2, np.int32),
        ),
        4,
        2,
        1 / 16,
    ),
    (
        "far_outside",
        lambda: (
            np.random.default_rng(3).standard_normal((1, 4, 4, 2)).astype(np.float32),
            np.array([[100.0, 100.0, 200.0, 200.0]], np.float32),
            np.zeros(1, np.int32),
        ),
        4,
        2,
        1 / 16,
    ),
    ("gradients_c10_8_4", lambda: mixed(seed=5, channels=10), 8, 4, 1 / 16),
    ("deterministic_c40_8_4", lambda: mixed(seed=6, channels=40), 8, 4, 1 / 16),
    # The GPU test's case: 37 channels, 28 -> 14, two backward chunks per box.
    ("gpu_case_c37_28_14", lambda: mixed(seed=9, channels=37), 28, 14, 1 / 16),
    # Four backward chunks per box (14 * 14 * 64 = 12544 elements > 3 * 4096).
    ("chunks_c64_28_14", lambda: mixed(seed=12, channels=64, per_kind=1), 28, 14, 1 / 16),
]


def case_inputs(make, pooled):
    """features, boxes, box_indices of a case and upstream gradients [R, P, P, C]."""
    features, boxes, box_indices = make()
    r, c = len(boxes), features.shape[-1]
    grads = np.random.default_rng(r * 1000 + c).standard_normal((r, pooled, pooled, c))
    return features, boxes, box_indices, grads.astype(np.float32)


def assert_matches(cuda, cpu, what):
    """Forward and argmax bit for bit (same float operations in the same order, no FMA on
    either side); gradients to float rounding, relative to the largest |value| (the CUDA
    backward sums in another order: atomics, block reductions; the CPU partly in double)."""
    np.testing.assert_array_equal(cuda["output"], cpu["output"], err_msg=f"output, {what}")
    np.testing.assert_array_equal(cuda["argmax"], cpu["argmax"], err_msg=f"argmax, {what}")
    for name, tol in (("grad_features", 1e-5), ("grad_boxes", 1e-4)):
        atol = tol * max(1.0, float(np.abs(cpu[name]).max(initial=0.0)))
        np.testing.assert_allclose(
            cuda[name], cpu[name], rtol=0, atol=atol, err_msg=f"{name}, {what}"
        )


@pytest.mark.parametrize("cap", [SOURCE_GRID_CAP, WRAP_GRID_CAP], ids=["grid", "wrapped"])
@pytest.mark.parametrize(
    "make,crop,pooled,scale", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_emulated_cuda_matches_cpu_kernels(driver, tmp_path, make, crop, pooled, scale, cap):
    inputs = case_inputs(make, pooled)
    cpu = run_op(*inputs, crop, pooled, scale)
    emulated = run_emulated(driver, tmp_path, *inputs, crop, pooled, scale, cap)
    for order, cuda in emulated.items():
        assert_matches(cuda, cpu, f"thread order {order}")


@pytest.mark.skipif(
    not tf.config.list_physical_devices("GPU"),
    reason="no GPU visible to TensorFlow (the emulated run above covers the CUDA source)",
)
@pytest.mark.parametrize(
    "make,crop,pooled,scale", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_gpu_op_matches_cpu_op(make, crop, pooled, scale):
    # The same cases on the real GPU through TensorFlow (kernels built with --fmad=false).
    inputs = case_inputs(make, pooled)
    cpu = run_op(*inputs, crop, pooled, scale)
    assert_matches(run_op(*inputs, crop, pooled, scale, "/GPU:0"), cpu, "GPU")


def test_standalone_check_passes_emulated(tmp_path):
    # custom_ops/roi_warp/standalone/roi_warp_check.cu, the nvcc-only check GPU users run, built
    # against the emulator: the program itself works and its tolerances hold for these kernels.
    (tmp_path / "standalone").mkdir()
    shutil.copy(os.path.join(SOURCES, "standalone", "roi_warp_check.cu"), tmp_path / "standalone")
    for header in ("roi_warp_gpu.h", "roi_warp_math.h"):
        shutil.copy(os.path.join(SOURCES, header), tmp_path)
    kernels = os.path.join(SOURCES, "roi_warp_kernels.cu.cc")
    (tmp_path / "roi_warp_kernels.cu.cc").write_text(emulated_source(kernels))
    exe = tmp_path / "roi_warp_check"
    cmd = [CXX, "-std=c++17", "-O1", "-ffp-contract=off", "-I", EMU, "-x", "c++"]
    cmd += [str(tmp_path / "standalone" / "roi_warp_check.cu"), "-x", "none"]
    cmd += [os.path.join(SOURCES, "standalone", "roi_warp_check_cpu.cc"), "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result


def test_cases_wrap_the_grid_and_the_backward_chunks():
    # The wrapped runs really wrap (more elements than 3 blocks of 256 threads), and some
    # boxes span several backward blocks (kBackwardChunk = 256 * 16 elements).
    sizes = []
    for _, make, _crop, pooled, _ in CASES:
        features, boxes, _ = make()
        sizes.append(
            (len(boxes) * pooled * pooled * features.shape[-1], pooled**2 * features.shape[-1])
        )
    assert max(total for total, _ in sizes) > 100 * WRAP_GRID_CAP * 256
    assert max(per_box for _, per_box in sizes) > 3 * 256 * 16


# The emulator itself: it must expose the bugs the comparison above relies on it to expose.


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    build = tmp_path_factory.mktemp("cuda_emu_selftest")
    source = build / "emu_selftest.cc"
    source.write_text(emulated_source(os.path.join(EMU, "emu_selftest.cu")))
    exe = build / "emu_selftest"
    cmd = [CXX, "-std=c++17", "-O2", "-Wall", "-Wno-sign-compare", "-I", EMU, str(source)]
    result = subprocess.run([*cmd, "-o", str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    check_shared_memory_is_poisoned(str(exe), "BlockSum(")

    def run(mode, order="ascending"):
        return subprocess.run([str(exe), mode, order], capture_output=True, text=True)

    return run


def block_sums():
    values = np.arange(3 * 256) % 97
    return values.reshape(3, 256).sum(axis=1).astype(np.float32)


def parse(result):
    assert result.returncode == 0, result.stderr
    return np.array(result.stdout.split(), np.float32)


@pytest.mark.parametrize("order", ORDERS)
def test_emulator_runs_a_correct_reduction_in_every_order(selftest, order):
    np.testing.assert_array_equal(parse(selftest("sum", order)), block_sums())
    np.testing.assert_array_equal(parse(selftest("neighbour", order)), (np.arange(256) + 1) % 256)
    assert parse(selftest("atomic", order)).tolist() == [3 * 256]


def test_emulator_exposes_missing_barriers(selftest):
    expected = block_sums()
    # No barrier at all: thread 0 reads partial sums nobody has written yet (poisoned: NaN).
    assert np.isnan(parse(selftest("sum_no_barriers", "ascending"))).all()
    # No barrier inside the loop: ascending and random orders read stale partial sums.
    # (Descending happens to run this tree reduction in a valid order: one reason the
    # comparison runs all three orders.)
    for order in ("ascending", "random:7"):
        assert not np.array_equal(parse(selftest("sum_no_loop_barrier", order)), expected)
    # Reading a neighbour's shared slot without a barrier: unwritten (NaN) in some order.
    for order in ORDERS:
        assert np.isnan(parse(selftest("neighbour_no_barrier", order))).any()


@pytest.mark.parametrize(
    "mode,message",
    [
        ("divergent", r"wait at different __syncthreads\(\) \(lines \d+ and \d+\)"),
        ("early_exit", r"255 of 256 threads wait at __syncthreads\(\).*the others returned"),
        ("store_past_end", r"past the end of a 400-byte (device )?allocation"),
    ],
)
def test_emulator_reports_invalid_kernels(selftest, mode, message):
    result = selftest(mode)
    assert result.returncode == 3, result
    assert re.search(message, result.stderr), result.stderr


def test_emulator_runtime_errors(selftest):
    result = selftest("zero_grid")
    assert result.stdout.split("\n")[:2] == ["invalid configuration argument", "no error"]
    assert selftest("memset_past_end").stdout.strip() == "invalid argument"
