"""Stage 3 training targets: mask-level class labels and box-regression targets."""

import tensorflow as tf

from mnc_tf.core import box_ops


def mask_iou(pred_probs, target_masks, threshold=0.5):
    """IoU of binarised predicted masks with binary targets, both in the RoI frame.

    Args:
      pred_probs: float32 ``[..., m, m]`` probabilities; target_masks: ``[..., m, m]`` {0, 1}.

    Returns:
      float32 ``[...]`` (0 where both are empty).
    """
    pred = tf.cast(pred_probs >= threshold, tf.float32)
    target = tf.cast(target_masks >= 0.5, tf.float32)
    inter = tf.reduce_sum(pred * target, axis=[-2, -1])
    union = tf.reduce_sum(tf.maximum(pred, target), axis=[-2, -1])
    return tf.math.divide_no_nan(inter, union)


def class_labels(box_labels, box_fg, pred_probs, target_masks, iou_threshold):
    """Mask-level labels (paper): a box-foreground RoI keeps its GT class only if its
    binarised predicted mask has mask IoU ≥ ``iou_threshold`` with its GT mask.

    Args:
      box_labels: int32 ``[B, R]`` (GT class of box-foreground RoIs, else 0).
      box_fg: bool ``[B, R]``.
      pred_probs, target_masks: ``[B, R, m, m]``.
      iou_threshold: 0 disables the mask criterion (box-level labels).

    Returns:
      int32 ``[B, R]``.
    """
    if iou_threshold <= 0:
        return box_labels
    ok = mask_iou(tf.stop_gradient(pred_probs), target_masks) >= iou_threshold
    return tf.where(box_fg & ok, box_labels, 0)


def box_targets(rois, gt_boxes, matched, weights):
    """Fast R-CNN targets ``encode(matched GT box, RoI)`` ``[B, R, 4]`` (no gradient)."""
    matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)
    return tf.stop_gradient(box_ops.encode(matched_boxes, tf.stop_gradient(rois), weights))
