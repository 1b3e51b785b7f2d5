"""Matching boxes to ground truth by IoU (used by stages 1, 2 and the refined stage 4)."""

import tensorflow as tf

from mnc_tf.core import box_ops


def match_to_gt(boxes, gt_boxes, gt_valid):
    """Best-overlapping ground-truth box of every box.

    Args:
      boxes: float32 ``[B, R, 4]`` or ``[R, 4]`` (shared by the batch, e.g. anchors).
      gt_boxes: float32 ``[B, N, 4]``.
      gt_valid: bool ``[B, N]``; padding rows never match.

    Returns:
      ``(max_iou [B, R], matched [B, R] int32, iou [B, R, N])``; ``max_iou`` is -1 for every
      box of an image without ground truth (``matched`` is then 0, and must be ignored).
    """
    boxes = tf.stop_gradient(boxes)  # labels are not differentiable
    if boxes.shape.rank == 2:
        boxes = boxes[None]
    iou = box_ops.iou(boxes, tf.stop_gradient(gt_boxes))  # [B, R, N]
    iou = tf.where(gt_valid[:, None, :], iou, -1.0)
    max_iou = tf.reduce_max(iou, axis=2)  # N >= 1 is checked by the model
    matched = tf.cast(tf.argmax(iou, axis=2), tf.int32)
    return max_iou, matched, iou
