"""Training throughput (images/s) on this machine's CPU: tiny and VGG-16 MNC, 1 vs 2 devices,
input pipeline vs data fed from memory. Prints JSON.

    python benchmarks/bench_train.py               # tiny + VGG-16, ~15 min on 2 cores
    python benchmarks/bench_train.py --quick       # tiny only, fewer steps

Every configuration runs in its own process (a CPU split into logical devices must be set up
before TensorFlow starts) and measures, on one model and one compiled train function:

* ``memory``: ``fit`` on one preprocessed batch repeated from memory (no input work at all);
* ``pipeline``: ``fit`` on the real input pipeline of ``mnc-train`` (``coco_dataset_fn``: JPEG
  decode, resize, random flip, mask rasterisation, padding; distributed with
  ``distribute_datasets_from_function`` on 2 devices);
* ``pipeline_only``: the same pipeline iterated without a model — what it can deliver.

``memory`` and ``pipeline`` alternate (``--repeats`` times each, averaged) so that load from
other jobs on a shared host affects both alike.

``pipeline / memory`` close to 1 (and ``pipeline_only`` far above both) means the input
pipeline is not the bottleneck. ``scaling`` is images/s with ``MirroredStrategy`` over 2
logical CPU devices divided by 1 device at the same global batch: on a CPU both "devices"
share the same cores, so this measures the strategy's overhead, not a speed-up (expect ≤ 1;
the speed-up comes with one device per GPU).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Model sections (MNCConfig fields + backbone/num_stages), as in the shipped configs.
MODELS = {
    # steps / warmup / repeats: defaults per model (a VGG-16 step takes ~40 s on 2 cores).
    "tiny": {
        "config": "configs/shapes_tiny_mnc5.yaml",
        "image_size": 128,
        "batch": 4,
        "steps": 20,
        "warmup": 3,
        "repeats": 2,
    },
    "vgg16": {
        "config": "configs/voc2012_vgg16_mnc5.yaml",
        "image_size": [480, 640],
        "batch": 2,
        "steps": 2,
        "warmup": 1,
        "repeats": 1,
    },
}


def _child(spec):
    """Measure one (model, devices) configuration; returns a result dict."""
    devices = spec["devices"]
    if devices > 1:
        from mnc_tf.training.strategy import split_cpu

        split_cpu(devices)
    import keras
    import tensorflow as tf

    from mnc_tf.data import coco_dataset_fn
    from mnc_tf.training.config import load_config
    from mnc_tf.training.strategy import select_strategy

    strategy = select_strategy("mirrored" if devices > 1 else "default")
    cfg = load_config(os.path.join(REPO, spec["config"]))
    mnc = cfg.mnc_config()
    model_section = dict(cfg.model)
    backbone, stages = model_section.pop("backbone"), model_section.pop("num_stages")
    global_batch = spec["batch"]
    fn = coco_dataset_fn(
        spec["annotations"],
        spec["images"],
        global_batch,
        training=True,
        repeat=True,
        flip=True,
        seed=0,
        short_side=mnc.input.short_side,
        max_side=mnc.input.max_side,
        max_instances=mnc.input.max_instances,
    )
    plain = fn(None)
    pipeline = strategy.distribute_datasets_from_function(fn) if devices > 1 else plain
    memory = tf.data.Dataset.from_tensors(next(iter(plain))).repeat()

    # The pipeline alone.
    it = iter(plain)
    for _ in range(spec["warmup"]):
        next(it)
    start = time.perf_counter()
    n = spec["steps"] * 2
    for _ in range(n):
        tf.nest.map_structure(lambda t: t.numpy(), next(it))
    pipeline_only = n * global_batch / (time.perf_counter() - start)

    with strategy.scope():
        from mnc_tf.modeling.mnc import MNC

        model = MNC(
            fn.info.num_classes,
            backbone=backbone,
            num_stages=stages,
            config=cfg.mnc_config(),
            dtype_policy=spec.get("mixed_precision", "float32"),
        )
        model.compile()
        model.optimizer.build(model.trainable_variables)

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

        def on_train_begin(self, logs=None):
            self.times = []

    def measure(data):
        clock = Clock()
        warmup, steps = spec["warmup"], spec["steps"]
        model.fit(data, epochs=1, steps_per_epoch=warmup + steps, callbacks=[clock], verbose=0)
        t = clock.times
        # Logs are materialised every step, so each timestamp follows a finished step.
        return steps * global_batch / (t[-1] - t[warmup - 1])

    # Alternate the two sources so that load from other jobs on a shared host hits both alike.
    mem_runs, pipe_runs = [], []
    for _ in range(spec["repeats"]):
        mem_runs.append(measure(memory))
        pipe_runs.append(measure(pipeline))
    mem = sum(mem_runs) / len(mem_runs)
    pipe = sum(pipe_runs) / len(pipe_runs)
    return {
        "model": spec["name"],
        "mixed_precision": spec.get("mixed_precision", "float32"),
        "devices": devices,
        "replicas": strategy.num_replicas_in_sync,
        "global_batch": global_batch,
        "image_size": [mnc.input.short_side, mnc.input.max_side],
        "steps_timed": spec["steps"],
        "memory_images_per_s": round(mem, 3),
        "memory_runs_images_per_s": [round(v, 3) for v in mem_runs],
        "pipeline_images_per_s": round(pipe, 3),
        "pipeline_runs_images_per_s": [round(v, 3) for v in pipe_runs],
        "pipeline_only_images_per_s": round(pipeline_only, 3),
        "pipeline_vs_memory": round(pipe / mem, 3),
        "seconds_per_step_memory": round(global_batch / mem, 3),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description="MNC training throughput on CPU (JSON)")
    parser.add_argument("--quick", action="store_true", help="tiny model only, fewer steps")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (tracing)")
    parser.add_argument("--repeats", type=int, default=None, help="memory/pipeline alternations")
    parser.add_argument("--models", default=None, help="comma list of tiny,vgg16")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument(
        "--mixed-precision",
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
        default="float32",
        help="Keras dtype policy of the trained model (default float32; the float32 vs "
        "mixed_bfloat16 step time in one run: bench_model.py --precision bfloat16 --train)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(_child(json.loads(args.child))), flush=True)
        return 0

    from mnc_tf.data import make_shapes_dataset

    models = (args.models or ("tiny" if args.quick else "tiny,vgg16")).split(",")
    results, started = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            m = MODELS[name]
            data = make_shapes_dataset(
                os.path.join(tmp, name), 16, seed=0, image_size=m["image_size"], num_classes=3
            )
            steps = args.steps or (m["steps"] // 2 if args.quick else m["steps"])
            for devices in (1, 2):
                spec = {
                    "name": name,
                    "config": m["config"],
                    "batch": m["batch"],
                    "devices": devices,
                    "annotations": data.annotation_file,
                    "images": data.image_dir,
                    "steps": steps,
                    "warmup": args.warmup or m["warmup"],
                    "repeats": args.repeats or (1 if args.quick else m["repeats"]),
                    "mixed_precision": args.mixed_precision,
                }
                env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
                proc = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=REPO,
                )
                lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode or not lines:
                    raise RuntimeError(
                        f"{name} on {devices} device(s) failed:\n{proc.stderr[-3000:]}"
                    )
                results.append(json.loads(lines[-1][len("RESULT ") :]))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    scaling = {}
    for name in models:
        one = [r for r in results if r["model"] == name and r["devices"] == 1][0]
        two = [r for r in results if r["model"] == name and r["devices"] == 2][0]
        scaling[name] = {
            "memory_2dev_over_1dev": round(
                two["memory_images_per_s"] / one["memory_images_per_s"], 3
            ),
            "pipeline_2dev_over_1dev": round(
                two["pipeline_images_per_s"] / one["pipeline_images_per_s"], 3
            ),
        }
    import tensorflow as tf

    report = {
        "benchmark": "bench_train",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "tensorflow": tf.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU")),
        },
        "results": results,
        "scaling_1_to_2_devices": scaling,
        "wall_seconds": round(time.time() - started, 1),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
