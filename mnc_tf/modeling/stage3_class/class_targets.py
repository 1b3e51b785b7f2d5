"""Stage 3 training targets: mask-level class labels and box-regression targets."""

import tensorflow as tf

from mnc_tf.core import box_ops
from mnc_tf.core import masks as mask_ops


def mask_overlap(pred_probs, rois, gt_masks, matched, threshold=0.4):
    """Mask IoU of every RoI's predicted mask with its matched object's whole GT mask.

    The released ``MaskLayer`` rule (``mask_overlap`` in ``lib/transform/mask_transform.py``):
    the ``m × m`` prediction is resized into the RoI box and binarised at ``threshold``; the
    IoU is taken with the object's whole GT mask, so object pixels outside the RoI count in
    the union. Here the prediction is pasted into the image with
    :func:`mnc_tf.core.masks.paste_masks` (pixel centres, bilinear, edge cells replicated —
    what ``cv2.resize`` does for an integer box) and compared at input-image resolution.

    Args:
      pred_probs: float32 ``[B, R, m, m]`` probabilities (no gradient is taken).
      rois: float32 ``[B, R, 4]`` pixels of the padded input images.
      gt_masks: uint8 / float ``[B, N, H, W]`` binary GT masks of those images.
      matched: int32 ``[B, R]`` GT index of every RoI.
      threshold: binarisation of the pasted prediction (released ``BINARIZE_THRESH`` 0.4).

    Returns:
      float32 ``[B, R]`` IoU (0 where both masks are empty).
    """
    pred_probs = tf.stop_gradient(tf.cast(pred_probs, tf.float32))
    rois = tf.stop_gradient(tf.cast(rois, tf.float32))
    shape = tf.shape(gt_masks)
    b, h, w = shape[0], shape[2], shape[3]
    r = tf.shape(rois)[1]
    m = pred_probs.shape[-1]
    soft = mask_ops.paste_masks(
        tf.reshape(pred_probs, [-1, m, m]), tf.reshape(rois, [-1, 4]), tf.stack([h, w]), None
    )
    pred = soft >= threshold  # bool [B·R, H, W]
    matched = tf.cast(matched, tf.int32)
    # GT areas per object (not per RoI), and the matched GT as bool: no float [B·R, H, W] copy.
    gt_area = tf.reduce_sum(tf.cast(gt_masks > 0, tf.float32), axis=[2, 3])  # [B, N]
    gt = tf.reshape(tf.gather(gt_masks, matched, batch_dims=1) > 0, tf.shape(pred))
    inter = tf.cast(tf.math.count_nonzero(pred & gt, axis=[1, 2]), tf.float32)
    pred_area = tf.cast(tf.math.count_nonzero(pred, axis=[1, 2]), tf.float32)
    union = pred_area + tf.reshape(tf.gather(gt_area, matched, batch_dims=1), [-1]) - inter
    return tf.reshape(tf.math.divide_no_nan(inter, union), tf.stack([b, r]))


def class_labels(box_labels, box_fg, mask_iou, iou_threshold):
    """Mask-level labels (paper; released ``MaskLayer``): a box-foreground RoI keeps its GT
    class only if ``mask_iou`` (:func:`mask_overlap`) is at least ``iou_threshold``.

    Args:
      box_labels: int32 ``[B, R]`` (GT class of box-foreground RoIs, else 0).
      box_fg: bool ``[B, R]``.
      mask_iou: float32 ``[B, R]`` or None (only allowed with ``iou_threshold <= 0``).
      iou_threshold: 0 disables the mask criterion (box-level labels).

    Returns:
      int32 ``[B, R]``.
    """
    if iou_threshold <= 0:
        return box_labels
    ok = mask_iou >= iou_threshold
    return tf.where(box_fg & ok, box_labels, 0)


def box_targets(rois, gt_boxes, matched, weights):
    """Fast R-CNN targets ``encode(matched GT box, RoI)`` ``[B, R, 4]`` (no gradient)."""
    matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)
    return tf.stop_gradient(box_ops.encode(matched_boxes, tf.stop_gradient(rois), weights))
