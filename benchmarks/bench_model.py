"""MNC speed vs its own backbone, measured in the same run (issue 4's benchmark).

Default: CPU, batch 1, 600×1000, VGG-16, 300 proposals (the paper's test setting). Reports,
as JSON: backbone-only forward and forward+backward, 3- and 5-stage inference, one 5-stage
training step, their ratios to the backbone numbers, the issue's targets, and analytic FLOP
counts (2·MACs of the conv / dense layers; RoI warp, NMS and voting not counted).

    python benchmarks/bench_model.py                 # paper setting (slow on a CPU)
    python benchmarks/bench_model.py --tiny          # tiny backbone, 128 px (quick check)
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
    rpn = 2 * feat_h * feat_w * (9 * c * cfg.rpn_conv_filters + cfg.rpn_conv_filters * 5 * a)
    s = cfg.roi_pooled_size
    p = cfg.class_pool_size
    mask = 2 * rois * (s * s * c * cfg.mask_fc_dim + cfg.mask_fc_dim * cfg.mask_size**2)
    path = p * p * c * cfg.fc_dim + cfg.fc_dim * cfg.fc_dim
    cls = 2 * rois * (2 * path + 2 * cfg.fc_dim * 5 * (model.num_classes + 1))
    return rpn, mask, cls


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
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

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
        "proposals": cfg.rpn_post_nms_topk_test,
        "threads": args.threads or "default",
    }
    models = {s: MNC(args.num_classes, backbone=backbone, num_stages=s, config=cfg) for s in (3, 5)}
    m5 = models[5]
    # The same backbone weights for all measurements.
    models[3].backbone.set_weights(m5.backbone.get_weights())

    @tf.function(jit_compile=False)
    def backbone_fwd(x):
        return m5.backbone(m5.normalizer(x), training=False)

    @tf.function(jit_compile=False)
    def backbone_fwd_bwd(x):
        with tf.GradientTape() as tape:
            f = m5.backbone(m5.normalizer(x), training=True)
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
    rpn, mask, cls = head_flops(m5, cfg.rpn_post_nms_topk_test, feat[1], feat[2])
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
