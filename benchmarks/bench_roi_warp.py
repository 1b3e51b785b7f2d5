"""Benchmark: the MncRoiWarp op vs crop_and_resize + max_pool2d, same run, same inputs.

Features 1x38x63x512 float32 (a 600x1000 image at stride 16), 300 random boxes, crop 28 ->
pool 14. Times the forward pass and forward + backward (gradients w.r.t. features and
boxes), each inside a tf.function, as the median of --runs runs after warm-up; ours and the
baseline are called in turn, and each run waits for its outputs by reading one element (not
by copying them to NumPy, which costs both sides the same ~35 ms and is reported apart as
host_copy_ms). Prints one JSON object; ratio = baseline wall time / our wall time (> 1: ours
is faster); cpu_ms holds the process CPU time of the same runs, the steadier measure where
other jobs share the CPU. With --device /GPU:0 it first checks that the op really runs on
the GPU (exits with a message when the op library was built without CUDA kernels).

    python benchmarks/bench_roi_warp.py [--runs 20] [--boxes 300] [--device /CPU:0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mnc_tf.ops import roi_warp, roi_warp_reference  # noqa: E402


def _sync(result):
    """Waits until every tensor of `result` is computed by reading one element of each.

    On the CPU a tf.function call returns with its outputs computed; on a GPU the read
    waits for the stream. Only one element crosses to the host: copying a whole
    [300, 14, 14, 512] output into NumPy costs ~35 ms on this machine, the same for both
    sides, and is not part of either op.
    """
    for t in tf.nest.flatten(result):
        tf.reshape(t, [-1])[:1].numpy()


def _median_ms(fns, runs):
    """Median wall-clock and process-CPU milliseconds of each fn() over `runs` calls.

    The functions are called in turn within each round, so a slow phase of a shared
    machine hits all of them alike.
    """
    for fn in fns:  # trace + warm caches
        _sync(fn())
        _sync(fn())
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            _sync(fn())
            wall[i].append((time.perf_counter() - start) * 1e3)
            cpu[i].append((time.process_time() - start_cpu) * 1e3)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu, strict=True)]


def _inputs(num_boxes, seed=0):
    rng = np.random.default_rng(seed)
    features = tf.constant(rng.standard_normal((1, 38, 63, 512)), tf.float32)
    # Proposals inside a 600x1000 image, 16..600 px per side.
    y1 = rng.uniform(0, 584, num_boxes)
    x1 = rng.uniform(0, 984, num_boxes)
    h = rng.uniform(16, 600, num_boxes)
    w = rng.uniform(16, 600, num_boxes)
    boxes = np.stack([y1, x1, np.minimum(y1 + h, 599), np.minimum(x1 + w, 999)], axis=1)
    boxes = tf.constant(boxes, tf.float32)
    box_indices = tf.zeros([num_boxes], tf.int32)
    upstream = tf.constant(rng.standard_normal((num_boxes, 14, 14, 512)), tf.float32)
    return features, boxes, box_indices, upstream


def _functions(warp, features, boxes, box_indices, upstream):
    """tf.functions of the forward and of forward + backward (both gradients)."""
    forward = tf.function(lambda: warp(features, boxes, box_indices))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch([features, boxes])
            out = warp(features, boxes, box_indices)
        return tape.gradient(out, [features, boxes], output_gradients=upstream)

    return forward, forward_backward


def _host_copy_ms(fn, runs=5):
    """Median time of copying fn()'s output into a NumPy array (reported, not counted)."""
    out = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out.numpy()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _check_placement(device, features, boxes, box_indices):
    """The op's kernels run on `device`: soft placement would silently run a missing GPU
    kernel on the CPU and time that instead. Returns the device's name."""
    with tf.device(device):
        out = roi_warp(features, boxes[:1], box_indices[:1])
    if not out.device.endswith(device.lstrip("/")):
        raise SystemExit(
            f"--device {device}: MncRoiWarp ran on {out.device}; the op library has no kernel "
            "for that device (GPU: rebuild with MNC_BUILD_CUDA=1, see README 'GPU users')"
        )
    physical = tf.config.list_physical_devices(device.strip("/").split(":")[0])
    if device.upper().startswith("/GPU") and physical:
        index = int(device.rsplit(":", 1)[-1])
        return tf.config.experimental.get_device_details(physical[index]).get("device_name")
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--boxes", type=int, default=300)
    parser.add_argument("--device", default="/CPU:0")
    args = parser.parse_args(argv)

    with tf.device(args.device):
        inputs = _inputs(args.boxes)
        device_name = _check_placement(args.device, *inputs[:3])
        ours = _functions(roi_warp, *inputs)
        base = _functions(roi_warp_reference, *inputs)
        ours_fwd, base_fwd = _median_ms([ours[0], base[0]], args.runs)
        ours_fb, base_fb = _median_ms([ours[1], base[1]], args.runs)
        host_copy = _host_copy_ms(ours[0])
    result = {
        "benchmark": "roi_warp",
        "device": args.device,
        "device_name": device_name,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "tensorflow": tf.__version__,
        "features": [1, 38, 63, 512],
        "boxes": args.boxes,
        "crop_size": 28,
        "pooled_size": 14,
        "runs": args.runs,
        "forward_ms": {"ours": round(ours_fwd[0], 2), "baseline": round(base_fwd[0], 2)},
        "forward_backward_ms": {"ours": round(ours_fb[0], 2), "baseline": round(base_fb[0], 2)},
        "ratio_forward": round(base_fwd[0] / ours_fwd[0], 2),
        "ratio_forward_backward": round(base_fb[0] / ours_fb[0], 2),
        # Process CPU time (all threads): steadier than wall time on a shared machine.
        "cpu_ms": {
            "forward": {"ours": round(ours_fwd[1], 1), "baseline": round(base_fwd[1], 1)},
            "forward_backward": {"ours": round(ours_fb[1], 1), "baseline": round(base_fb[1], 1)},
        },
        # Copying the [R, 14, 14, 512] forward output into NumPy; excluded from the
        # timings above (both sides would pay it; earlier versions of this script did).
        "host_copy_ms": round(host_copy, 1),
        "baseline": "tf.image.crop_and_resize + tf.nn.max_pool2d (roi_warp_reference)",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
