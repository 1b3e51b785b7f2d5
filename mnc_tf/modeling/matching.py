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


def label_rois(rois, valid, gt_boxes, gt_labels, gt_valid, fg_iou):
    """Box-level labels of RoIs, the released rule for stages 2 and 4.

    A valid RoI is foreground when its best IoU with a GT box is at least ``fg_iou``; a
    foreground RoI takes the class of that GT box, every other RoI class 0. The RoI sampler
    applies it to its candidates (stage 2), the cascade to the regressed boxes (stage 4).

    Args:
      rois: float32 ``[B, R, 4]``; valid: bool ``[B, R]``.
      gt_boxes: float32 ``[B, N, 4]``; gt_labels: int ``[B, N]``; gt_valid: bool ``[B, N]``.
      fg_iou: python float (``MNCConfig.roi_sampling.fg_iou``).

    Returns:
      dict of ``[B, R]`` tensors: ``max_iou``, ``matched`` (int32 GT index), ``fg`` (bool),
      ``labels`` (GT class for foreground, else 0).
    """
    max_iou, matched, _ = match_to_gt(rois, gt_boxes, gt_valid)
    fg = valid & (max_iou >= fg_iou)
    labels = tf.where(fg, tf.gather(gt_labels, matched, batch_dims=1), 0)
    return {"max_iou": max_iou, "matched": matched, "fg": fg, "labels": labels}
