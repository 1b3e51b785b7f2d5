"""The one box-arithmetic module of mnc_tf.

Every box is ``[..., 4]`` float32 ``y1, x1, y2, x2`` in pixels (DESIGN.md §4). Areas and
widths use the continuous convention (``x2 - x1``), not the ``+ 1`` of the Caffe code: a box
from pixel edge 0 to pixel edge 16 is 16 pixels wide. All functions are batched TF ops with
no Python loops, so they run inside ``tf.function`` and export to SavedModels.
"""

import tensorflow as tf

# Largest log-scale a decoded box may grow by (log(1000 / 16)), as in Faster R-CNN.
BBOX_XFORM_CLIP = 4.135166556742356


def area(boxes):
    """Area of ``boxes [..., 4]``; flipped or empty boxes have area 0."""
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def iou(boxes1, boxes2):
    """Pairwise IoU.

    Args:
      boxes1: ``[..., N, 4]``.
      boxes2: ``[..., M, 4]`` (same leading dims as ``boxes1``).

    Returns:
      ``[..., N, M]`` IoU in [0, 1]; 0 where the union is empty.
    """
    b1 = tf.expand_dims(boxes1, -2)  # [..., N, 1, 4]
    b2 = tf.expand_dims(boxes2, -3)  # [..., 1, M, 4]
    y1 = tf.maximum(b1[..., 0], b2[..., 0])
    x1 = tf.maximum(b1[..., 1], b2[..., 1])
    y2 = tf.minimum(b1[..., 2], b2[..., 2])
    x2 = tf.minimum(b1[..., 3], b2[..., 3])
    inter = tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)
    union = area(b1) + area(b2) - inter
    return tf.math.divide_no_nan(inter, union)


def encode(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets ``(dy, dx, dh, dw)`` that move ``anchors`` onto ``boxes``.

    Args:
      boxes, anchors: ``[..., 4]`` broadcastable.
      weights: per-coordinate multipliers (Fast R-CNN uses (10, 10, 5, 5) for stage 3).

    Returns:
      ``[..., 4]`` deltas; the inverse of :func:`decode`.
    """
    ah = anchors[..., 2] - anchors[..., 0]
    aw = anchors[..., 3] - anchors[..., 1]
    acy = anchors[..., 0] + 0.5 * ah
    acx = anchors[..., 1] + 0.5 * aw
    bh = boxes[..., 2] - boxes[..., 0]
    bw = boxes[..., 3] - boxes[..., 1]
    bcy = boxes[..., 0] + 0.5 * bh
    bcx = boxes[..., 1] + 0.5 * bw
    eps = 1e-6
    ah = tf.maximum(ah, eps)
    aw = tf.maximum(aw, eps)
    dy = (bcy - acy) / ah * weights[0]
    dx = (bcx - acx) / aw * weights[1]
    dh = tf.math.log(tf.maximum(bh, eps) / ah) * weights[2]
    dw = tf.math.log(tf.maximum(bw, eps) / aw) * weights[3]
    return tf.stack([dy, dx, dh, dw], axis=-1)


def decode(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Apply ``deltas [..., 4]`` ``(dy, dx, dh, dw)`` to ``anchors [..., 4]``.

    Differentiable in both arguments (the cascade back-propagates through decoded boxes).
    """
    ah = anchors[..., 2] - anchors[..., 0]
    aw = anchors[..., 3] - anchors[..., 1]
    acy = anchors[..., 0] + 0.5 * ah
    acx = anchors[..., 1] + 0.5 * aw
    dy = deltas[..., 0] / weights[0]
    dx = deltas[..., 1] / weights[1]
    dh = tf.minimum(deltas[..., 2] / weights[2], BBOX_XFORM_CLIP)
    dw = tf.minimum(deltas[..., 3] / weights[3], BBOX_XFORM_CLIP)
    cy = dy * ah + acy
    cx = dx * aw + acx
    h = tf.exp(dh) * ah
    w = tf.exp(dw) * aw
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip(boxes, image_size):
    """Clip ``boxes [B, N, 4]`` to per-image ``image_size [B, 2]`` (h, w) or a ``[2]`` size."""
    image_size = tf.cast(image_size, boxes.dtype)
    if image_size.shape.rank == 1:
        h, w = image_size[0], image_size[1]
    else:
        h = image_size[:, 0][:, None]
        w = image_size[:, 1][:, None]
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    return tf.stack(
        [
            tf.clip_by_value(y1, 0.0, h),
            tf.clip_by_value(x1, 0.0, w),
            tf.clip_by_value(y2, 0.0, h),
            tf.clip_by_value(x2, 0.0, w),
        ],
        axis=-1,
    )


def valid_mask(boxes, min_size=0.0):
    """``[...]`` bool: boxes whose height and width are both ≥ ``min_size`` (> 0 if 0)."""
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    if min_size > 0:
        return tf.logical_and(h >= min_size, w >= min_size)
    return tf.logical_and(h > 0, w > 0)
