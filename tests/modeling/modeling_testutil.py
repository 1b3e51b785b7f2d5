"""Helpers of the model tests: a tiny config and a synthetic shapes batch."""

import numpy as np

from mnc_tf.config import MNCConfig


def make_tiny_config(**overrides):
    """A very small MNC for 64×64 images: stride 8, fc 32, 16 RoIs per image."""
    base = dict(
        short_side=64,
        max_side=64,
        max_instances=4,
        tiny_filters=(8, 16, 16),
        tiny_convs_per_stage=1,
        tiny_out_channels=16,
        rpn_conv_filters=16,
        rpn_pre_nms_topk_train=200,
        rpn_post_nms_topk_train=32,
        rpn_pre_nms_topk_test=200,
        rpn_post_nms_topk_test=32,
        rpn_batch_size_per_image=64,
        roi_batch_size_per_image=16,
        mask_size=14,
        mask_fc_dim=32,
        fc_dim=32,
        max_detections=10,
        deterministic_sampling=True,
    )
    base.update(overrides)
    return MNCConfig.tiny_shapes(**base)


def make_shapes(n, size=64, max_instances=4, seed=0):
    """``n`` images with 1–2 objects: rectangles (label 1) and discs (label 2).

    Returns ``(images float32 [n, size, size, 3], targets dict)`` padded as in
    docs/CONTRACTS.md (label -1, boxes -1, masks 0 for padding rows).
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.float32)
    boxes = -np.ones((n, max_instances, 4), np.float32)
    labels = -np.ones((n, max_instances), np.int32)
    masks = np.zeros((n, max_instances, size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        images[i] = rng.uniform(60, 90, 3)
        k = 1 + i % 2
        # Objects in separate horizontal halves so they never overlap.
        for j in range(k):
            side = rng.uniform(16, 26)
            cy = rng.uniform(side / 2 + 2, size - side / 2 - 2)
            lo = (size / k) * j
            cx = rng.uniform(lo + side / 2 + 1, lo + size / k - side / 2 - 1)
            label = 1 + (i + j) % 2
            if label == 1:
                m = (np.abs(yy + 0.5 - cy) < side / 2) & (np.abs(xx + 0.5 - cx) < side / 2)
            else:
                m = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 < (side / 2) ** 2
            images[i][m] = [220, 40, 40] if label == 1 else [40, 40, 220]
            ys, xs = np.nonzero(m)
            boxes[i, j] = [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
            labels[i, j] = label
            masks[i, j] = m
    return images, {"boxes": boxes, "labels": labels, "masks": masks}
