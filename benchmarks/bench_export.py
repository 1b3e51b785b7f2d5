"""Latency of the exported SavedModel vs the in-process model, same image, same run.

    python benchmarks/bench_export.py                    # tiny backbone, 128-px config
    python benchmarks/bench_export.py --backbone vgg16    # paper config (600 / 1000), slow on CPU
    python benchmarks/bench_export.py --backbone vgg16 --precision bfloat16  # + a bf16 export

With ``--precision bfloat16`` a second export computing in bfloat16 (``mnc-export --precision
bfloat16``) is timed on ``serving_image_tensor`` in the same round-robin
(``latency_ms.serving_image_tensor_bfloat16``; ``precision.speedup_vs_float32_export``).

Prints one JSON object:

* ``latency_ms``: medians over ``--iters`` round-robin runs (after ``--warmup``) of
  - ``predict``: ``model.predict`` on the preprocessed (resized) image — the baseline the
    issue names; it includes Keras' per-call data-adapter overhead;
  - ``model_function``: the model's forward pass as one ``tf.function``, RoI warping as the
    model uses it by default (the custom op when its library loads);
  - ``model_function_reference``: the same with the stock-op RoI warping the export uses;
  - ``serving_image_tensor``: the export's uint8 signature, loaded with
    ``tf.saved_model.load`` — *includes* the resize and the box mapping;
  - ``serving_default``: the export's encoded-bytes signature (adds JPEG decoding);
  - ``session_loader_image_tensor`` / ``session_loader_default``: the same two signatures in
    TensorFlow's Session loader (the loader TF Serving uses), through the C API in a process
    without Python (``tools/saved_model_loader_check.c``; ``TF_SessionRun`` wall-clock time,
    median after ``--warmup`` requests per signature; run after the in-process timings, not
    interleaved with them). Skipped (``null``) when no C compiler is found.
* ``overhead_pct``: ``serving_image_tensor`` relative to each baseline (target ≤ 10 %
  against ``predict``).
* ``export_time_s``, ``saved_model_mb``.

Both sides run on the same machine in the same process; untrained weights (latency does not
depend on them beyond the fixed number of proposals / detections).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _interleaved_median_ms(candidates, iters, warmup):
    """Median milliseconds per candidate, timed round-robin so that load from other processes
    on a shared machine hits every candidate alike."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    for _ in range(iters):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(t) for name, t in times.items()}


def _dir_mb(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**20


def _block(outputs):
    # Materialise every output so lazy execution can't hide work.
    for value in tf.nest.flatten(outputs):
        np.asarray(value)


def _session_loader_ms(version_dir, pixels, encoded, args, workdir):
    """Median TF_SessionRun milliseconds per signature in the C-API Session loader."""
    from mnc_tf.export import session_loader

    names = {"serving_image_tensor": "image_tensor", "serving_default": "default"}
    try:
        binary = session_loader.build(workdir)
    except RuntimeError as e:
        print(f"session loader skipped: {str(e).splitlines()[0]}", flush=True)
        return {f"session_loader_{n}": None for n in names.values()}
    per_signature = args.warmup + args.iters
    requests = [("serving_image_tensor", "images", pixels.numpy())] * per_signature + [
        ("serving_default", "images", [encoded.numpy()[0]])
    ] * per_signature
    report, proc = session_loader.run(binary, version_dir, requests, workdir)
    if proc.returncode != 0 or not all(r["ok"] for r in report["requests"]):
        raise RuntimeError(
            f"the Session loader failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    results = {}
    for k, name in enumerate(names.values()):
        timed = report["requests"][k * per_signature + args.warmup : (k + 1) * per_signature]
        results[f"session_loader_{name}"] = statistics.median(r["ms"] for r in timed)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="tiny", choices=["tiny", "vgg16"])
    parser.add_argument("--height", type=int, default=None, help="original image height")
    parser.add_argument("--width", type=int, default=None, help="original image width")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument(
        "--precision",
        choices=("bfloat16", "float16"),
        default=None,
        help="also export in this precision and time its serving_image_tensor, interleaved "
        "with the float32 export's (latency_ms.serving_image_tensor_<precision>)",
    )
    args = parser.parse_args(argv)

    import keras

    from mnc_tf import ops
    from mnc_tf.config import MNCConfig
    from mnc_tf.data.preprocess import resize_image
    from mnc_tf.export import export_serving
    from mnc_tf.modeling.mnc import MNC

    keras.utils.set_random_seed(0)
    if args.backbone == "tiny":
        config = MNCConfig.tiny_shapes()
        height, width = args.height or 96, args.width or 160
    else:
        config = MNCConfig()
        height, width = args.height or 480, args.width or 640
    model = MNC(num_classes=args.num_classes, backbone=args.backbone, config=config)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    resized, info = resize_image(image, config.input.short_side, config.input.max_side)
    features = {"images": resized[None], "image_info": info[None]}
    features_np = {k: v.numpy() for k, v in features.items()}

    def model_function():
        return tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    default_fn = model_function()
    default_fn(features)
    reference_fn = model_function()
    with ops.roi_warp_implementation("reference"):
        reference_fn(features)  # traced here, reused below (same input shapes)

    workdir = tempfile.mkdtemp(prefix="bench_export_")
    try:
        start = time.perf_counter()
        version_dir = export_serving(model, workdir, version=1)
        export_time = time.perf_counter() - start
        size_mb = _dir_mb(version_dir)
        loaded = tf.saved_model.load(version_dir)
        image_fn = loaded.signatures["serving_image_tensor"]
        bytes_fn = loaded.signatures["serving_default"]
        pixels = tf.constant(image[None])
        encoded = tf.io.encode_jpeg(image, quality=95)[None]
        candidates = {
            "predict": lambda: _block(model.predict(features_np, verbose=0)),
            "model_function": lambda: _block(default_fn(features)),
            "model_function_reference": lambda: _block(reference_fn(features)),
            "serving_image_tensor": lambda: _block(image_fn(images=pixels)),
            "serving_default": lambda: _block(bytes_fn(images=encoded)),
        }
        if args.precision:
            low_dir = export_serving(model, workdir, version=2, precision=args.precision)
            low_mb = _dir_mb(low_dir)
            low_fn = tf.saved_model.load(low_dir).signatures["serving_image_tensor"]
            candidates[f"serving_image_tensor_{args.precision}"] = lambda: _block(
                low_fn(images=pixels)
            )
        results = _interleaved_median_ms(candidates, args.iters, args.warmup)
        results.update(_session_loader_ms(version_dir, pixels, encoded, args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    serving = results["serving_image_tensor"]
    report = {
        "benchmark": "export_serving_overhead",
        "backbone": args.backbone,
        "image_size": [height, width],
        "resized_size": [int(v) for v in info[1].numpy()],
        "num_classes": args.num_classes,
        "max_detections": config.postprocess.max_detections,
        "iters": args.iters,
        "latency_ms": {k: None if v is None else round(v, 2) for k, v in results.items()},
        "overhead_pct": {
            "vs_predict": round(100.0 * (serving / results["predict"] - 1.0), 1),
            "vs_model_function": round(100.0 * (serving / results["model_function"] - 1.0), 1),
            "vs_model_function_reference": round(
                100.0 * (serving / results["model_function_reference"] - 1.0), 1
            ),
        },
        "export_time_s": round(export_time, 2),
        **(
            {
                "precision": {
                    "precision": args.precision,
                    "saved_model_mb": round(low_mb, 2),
                    "speedup_vs_float32_export": round(
                        serving / results[f"serving_image_tensor_{args.precision}"], 3
                    ),
                    "load_average": list(os.getloadavg()),
                }
            }
            if args.precision
            else {}
        ),
        "saved_model_mb": round(size_mb, 2),
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
