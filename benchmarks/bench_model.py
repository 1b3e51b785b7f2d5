"""MNC speed vs its own backbone, measured in the same run (issue 4's benchmark).

Default: CPU, batch 1, 600×1000, VGG-16, 300 proposals (the paper's test setting). Reports,
as JSON: backbone-only forward and forward+backward, 3- and 5-stage inference, one 5-stage
training step, their ratios to the backbone numbers, the issue's targets, and analytic FLOP
counts (2·MACs of the conv / dense layers; RoI warp, NMS and voting not counted).

    python benchmarks/bench_model.py                 # paper setting (slow on a CPU)
    python benchmarks/bench_model.py --tiny          # tiny backbone, 128 px (quick check)

Precision (issue 14): ``--precision bfloat16`` measures float32 and bfloat16 in the same run,
interleaved (VGG-16 and ResNet-50, 640×640 and 600×1000, 80 classes with ``--num-classes 80``):
backbone and 5-stage times, the bf16/float32 speed-up, the 5-stage/backbone time ratio
against the FLOP ratio (backbone FLOPs from the traced graph's Conv2D ops), and the achieved
GFLOP/s of backbone and heads; ``--train`` adds one 5-stage training step, float32 vs
``mixed_bfloat16``. The bfloat16 model is ``mnc_tf.precision.with_precision(model, ...)``.

    python benchmarks/bench_model.py --precision bfloat16 --num-classes 80 --train
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from mnc_tf.config import MNCConfig  # noqa: E402
from mnc_tf.modeling import MNC  # noqa: E402

TARGETS = {"infer_3stage_ratio": 1.6, "infer_5stage_ratio": 2.0, "train_step_ratio": 1.8}


def time_interleaved(fns, runs, warmup=1):
    """Median seconds of each ``fns[name]()``, measured round-robin so that load changes on a
    shared machine hit every measurement alike (the ratios are what matters)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in times.items()}


def conv_dense_flops(model, height, width):
    """2·MACs of every Conv2D of a functional backbone for one ``height × width`` image."""
    # Shapes are dynamic, so track the spatial size along the layers (ceil division).
    h, w = height, width
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            s = layer.strides[0]
            h, w = -(-h // s), -(-w // s)
            kh, kw = layer.kernel_size
            cin = layer.kernel.shape[2]
            flops += 2 * h * w * kh * kw * cin * layer.filters
        elif isinstance(layer, keras.layers.MaxPooling2D):
            s = layer.strides[0]
            h, w = -(-h // s), -(-w // s)
    return flops


def head_flops(model, rois, feat_h, feat_w):
    """2·MACs of the RPN and one mask + one class stage for ``rois`` RoIs."""
    cfg = model.config
    c = model.backbone.output_shape[-1]
    a = model.anchor_generator.num_anchors
    rpn = 2 * feat_h * feat_w * (9 * c * cfg.rpn.conv_filters + cfg.rpn.conv_filters * 5 * a)
    s = cfg.heads.roi_pooled_size
    p = cfg.heads.class_pool_size
    mask = (
        2
        * rois
        * (s * s * c * cfg.heads.mask_fc_dim + cfg.heads.mask_fc_dim * cfg.heads.mask_size**2)
    )
    path = p * p * c * cfg.heads.fc_dim + cfg.heads.fc_dim * cfg.heads.fc_dim
    cls = 2 * rois * (2 * path + 2 * cfg.heads.fc_dim * 5 * (model.num_classes + 1))
    return rpn, mask, cls


def graph_conv_flops(fn, height, width):
    """2·MACs of every Conv2D / MatMul in the graph of ``fn`` on one ``height × width`` image
    (static shapes of a concrete function; works for any backbone, branches included)."""
    spec = tf.TensorSpec([1, height, width, 3], tf.float32)
    graph = tf.function(fn).get_concrete_function(spec).graph
    flops = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            out = op.outputs[0].shape.as_list()
            kh, kw, cin, _ = op.inputs[1].shape.as_list()
            flops += 2 * int(np.prod(out)) * kh * kw * cin
        elif op.type == "MatMul":
            a = op.inputs[0].shape.as_list()
            k = a[0] if op.get_attr("transpose_a") else a[1]
            flops += 2 * int(np.prod(op.outputs[0].shape.as_list())) * k
    return flops


def _parse_size(text):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes: expected HxW like 640x640, got {text!r}"
        ) from None
    return h, w


def precision_main(args):
    """float32 vs a 16-bit precision in the same run (issue 14): per backbone and size, the
    backbone alone and the 5-stage model, interleaved; optionally one training step."""
    from mnc_tf.precision import with_precision

    low = args.precision
    results = {
        "device": "cpu" if not tf.config.list_physical_devices("GPU") else "gpu",
        "batch": 1,
        "num_classes": args.num_classes,
        "proposals": MNCConfig().rpn.post_nms_topk_test,
        "precision": low,
        "runs": args.runs,
        "load_average_before": list(os.getloadavg()),
        "settings": [],
    }
    rng = np.random.default_rng(0)
    for backbone in [] if args.train_only else args.backbones.split(","):
        keras.utils.set_random_seed(0)
        m32 = MNC(args.num_classes, backbone=backbone, num_stages=5)
        m16 = with_precision(m32, low)
        for h, w in args.sizes:
            images = tf.constant(rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32))
            fns = {}
            for name, m in (("float32", m32), (low, m16)):
                bb = tf.function(
                    lambda x, m=m: m.backbone(m.preprocessing(x), training=False), jit_compile=False
                )
                full = tf.function(lambda x, m=m: m(x, training=False), jit_compile=False)
                fns[f"backbone_{name}"] = lambda bb=bb, x=images: bb(x).numpy()
                fns[f"mnc5_{name}"] = lambda full=full, x=images: full(x)["masks"].numpy()
            load0 = os.getloadavg()[0]
            seconds = time_interleaved(fns, args.runs)
            load1 = os.getloadavg()[0]
            bb_flops = graph_conv_flops(lambda x, m=m32: m.backbone(m.preprocessing(x)), h, w)
            fh, fw = -(-h // m32.feature_stride), -(-w // m32.feature_stride)
            rpn, mask, cls = head_flops(m32, m32.config.rpn.post_nms_topk_test, fh, fw)
            total = bb_flops + rpn + 2 * (mask + cls)
            entry = {"backbone": backbone, "image": [h, w], "seconds": seconds}
            entry["gflops"] = {
                "backbone": bb_flops / 1e9,
                "heads": (total - bb_flops) / 1e9,
                "mnc5": total / 1e9,
                "flop_ratio_mnc5_to_backbone": total / bb_flops,
            }
            for name in ("float32", low):
                t_bb, t5 = seconds[f"backbone_{name}"], seconds[f"mnc5_{name}"]
                entry[name] = {
                    "mnc5_over_backbone_time": t5 / t_bb,
                    "backbone_gflop_per_s": bb_flops / t_bb / 1e9,
                    "heads_gflop_per_s": (total - bb_flops) / max(t5 - t_bb, 1e-9) / 1e9,
                    "mnc5_gflop_per_s": total / t5 / 1e9,
                }
            t16, t32 = seconds[f"mnc5_{low}"], seconds["mnc5_float32"]
            entry["speedup_mnc5"] = t32 / t16
            entry["speedup_backbone"] = seconds["backbone_float32"] / seconds[f"backbone_{low}"]
            # Issue 14: low-precision 5-stage time <= 1.15 × (FLOP ratio) × its backbone time.
            entry["efficiency_bound_s"] = (
                1.15 * entry["gflops"]["flop_ratio_mnc5_to_backbone"] * seconds[f"backbone_{low}"]
            )
            entry["meets"] = {
                "speedup_mnc5>=4": entry["speedup_mnc5"] >= 4.0,
                "mnc5<=1.15*flop_ratio*backbone": t16 <= entry["efficiency_bound_s"],
            }
            entry["load_average"] = [load0, load1]
            results["settings"].append(entry)
            print(json.dumps(entry), flush=True)
    if args.train or args.train_only:
        results["train_step"] = train_step_compare(args, low)
    results["load_average_after"] = list(os.getloadavg())
    print(json.dumps(results, indent=2))


def train_step_compare(args, low):
    """One VGG-16 5-stage training step (compile() defaults), float32 vs mixed_``low``,
    interleaved, at the first ``--sizes`` entry."""
    h, w = args.sizes[0]
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32))
    boxes = np.array([[[50, 60, 250, 300], [100, 400, 500, 600], [300, 100, 580, 420]]], np.float32)
    boxes *= [h / 640, w / 640, h / 640, w / 640]
    masks = np.zeros((1, 3, h, w), np.uint8)
    for j in range(3):
        y1, x1, y2, x2 = boxes[0, j].astype(int)
        masks[0, j, y1:y2, x1:x2] = 1
    data = ({"images": images}, {"boxes": boxes, "labels": np.array([[1, 2, 3]], np.int32),
                                 "masks": masks})  # fmt: skip
    fns = {}
    backbone = args.backbones.split(",")[0]
    for policy in ("float32", f"mixed_{low}"):
        keras.utils.set_random_seed(0)
        m = MNC(args.num_classes, backbone=backbone, num_stages=5, dtype_policy=policy)
        m.compile()
        m.make_train_function()
        fn = m.train_function
        fns[policy] = lambda fn=fn: {k: float(v) for k, v in fn(iter([data])).items()}
    load0 = os.getloadavg()[0]
    seconds = time_interleaved(fns, args.runs)
    return {
        "backbone": backbone,
        "image": [h, w],
        "seconds": seconds,
        "speedup": seconds["float32"] / seconds[f"mixed_{low}"],
        "meets_speedup>=2.5": seconds["float32"] / seconds[f"mixed_{low}"] >= 2.5,
        "load_average": [load0, os.getloadavg()[0]],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny backbone at 128 px")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads (0: TF default). 1 makes ratios stable on a shared CPU",
    )
    parser.add_argument(
        "--precision",
        choices=("bfloat16", "float16"),
        default=None,
        help="compare float32 with this precision in the same run (5-stage inference at "
        "--sizes for --backbones, ratios and GFLOP/s; --train adds one training step)",
    )
    parser.add_argument("--backbones", default="vgg16,resnet50", help="with --precision")
    parser.add_argument(
        "--sizes",
        type=_parse_size,
        nargs="+",
        default=[(640, 640), (600, 1000)],
        help="with --precision: HxW image sizes (default 640x640 600x1000)",
    )
    parser.add_argument("--train", action="store_true", help="with --precision: a train step")
    parser.add_argument(
        "--train-only", action="store_true", help="with --precision: only the train step"
    )
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.precision:
        return precision_main(args)

    if args.tiny:
        h, w, backbone = 128, 128, "tiny"
        cfg = MNCConfig.tiny_shapes(rpn_post_nms_topk_test=300, rpn_post_nms_topk_train=300)
    else:
        h, w, backbone = 600, 1000, "vgg16"
        cfg = MNCConfig()
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32))
    n = 4
    boxes = -np.ones((1, n, 4), np.float32)
    boxes[0, :3] = [[50, 60, 250, 300], [100, 400, 500, 800], [300, 100, 580, 420]]
    boxes[0, :3] *= [h / 600, w / 1000, h / 600, w / 1000]
    labels = np.array([[1, 2, 3, -1]], np.int32)
    masks = np.zeros((1, n, h, w), np.uint8)
    for j in range(3):
        y1, x1, y2, x2 = boxes[0, j].astype(int)
        masks[0, j, y1:y2, x1:x2] = 1
    targets = {
        "boxes": tf.constant(boxes),
        "labels": tf.constant(labels),
        "masks": tf.constant(masks),
    }

    results = {
        "device": "cpu" if not tf.config.list_physical_devices("GPU") else "gpu",
        "backbone": backbone,
        "image": [h, w],
        "batch": 1,
        "proposals": cfg.rpn.post_nms_topk_test,
        "threads": args.threads or "default",
    }
    models = {s: MNC(args.num_classes, backbone=backbone, num_stages=s, config=cfg) for s in (3, 5)}
    m5 = models[5]
    # The same backbone weights for all measurements.
    models[3].backbone.set_weights(m5.backbone.get_weights())

    @tf.function(jit_compile=False)
    def backbone_fwd(x):
        return m5.backbone(m5.preprocessing(x), training=False)

    @tf.function(jit_compile=False)
    def backbone_fwd_bwd(x):
        with tf.GradientTape() as tape:
            f = m5.backbone(m5.preprocessing(x), training=True)
            loss = tf.reduce_sum(tf.cast(f, tf.float32))
        return tape.gradient(loss, m5.backbone.trainable_weights)

    infer = {
        s: tf.function(lambda x, m=models[s]: m(x, training=False), jit_compile=False)
        for s in (3, 5)
    }
    m5.compile()  # the paper's solver: CaffeSGD, momentum 0.9, weight decay 5e-4
    data = ({"images": images}, targets)
    m5.make_train_function()
    train_fn = m5.train_function

    def train_step():
        out = train_fn(iter([data]))
        return {k: float(v) for k, v in out.items()}

    seconds = time_interleaved(
        {
            "backbone_forward": lambda: backbone_fwd(images).numpy(),
            "backbone_forward_backward": lambda: [g.numpy() for g in backbone_fwd_bwd(images)],
            "infer_3stage": lambda: infer[3](images)["masks"].numpy(),
            "infer_5stage": lambda: infer[5](images)["masks"].numpy(),
            "train_step_5stage": train_step,
        },
        args.runs,
    )
    t_bb, t_bb_bwd = seconds["backbone_forward"], seconds["backbone_forward_backward"]
    t3, t5, t_train = seconds["infer_3stage"], seconds["infer_5stage"], seconds["train_step_5stage"]

    feat = backbone_fwd(images).shape
    bb_flops = conv_dense_flops(m5.backbone, h, w)
    rpn, mask, cls = head_flops(m5, cfg.rpn.post_nms_topk_test, feat[1], feat[2])
    results.update(
        seconds=seconds,
        ratios={
            "infer_3stage_ratio": t3 / t_bb,
            "infer_5stage_ratio": t5 / t_bb,
            "train_step_ratio": t_train / t_bb_bwd,
        },
        targets=TARGETS,
        gflops={
            "backbone": bb_flops / 1e9,
            "rpn": rpn / 1e9,
            "mask_stage": mask / 1e9,
            "class_stage": cls / 1e9,
            "infer_3stage": (bb_flops + rpn + mask + cls) / 1e9,
            "infer_5stage": (bb_flops + rpn + 2 * (mask + cls)) / 1e9,
        },
    )
    results["meets_targets"] = {k: results["ratios"][k] <= v for k, v in TARGETS.items()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
