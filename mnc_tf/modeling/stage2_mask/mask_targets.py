"""Stage 2 training targets: the GT mask cut out by each RoI, resized to ``m × m``."""

import tensorflow as tf


def mask_targets(gt_masks, rois, matched, mask_size, threshold=0.5):
    """Crop every RoI's matched GT mask with ``tf.image.crop_and_resize``.

    Sampling follows the mask convention of :func:`mnc_tf.core.masks.paste_masks`: target cell
    ``(i, j)`` is the GT mask sampled (bilinearly) at pixel point
    ``(y1 + (i + 0.5)·h/m, x1 + (j + 0.5)·w/m)``; mask pixel ``r`` has its centre at ``r + 0.5``.

    Args:
      gt_masks: uint8 (or float) ``[B, N, H, W]`` binary instance masks of the padded images.
      rois: float32 ``[B, R, 4]`` pixels (no gradient is taken through the targets).
      matched: int32 ``[B, R]`` GT index of every RoI.
      mask_size: ``m``.
      threshold: the resampled mask is binarised at this value.

    Returns:
      float32 ``[B, R, m, m]`` in {0, 1}.
    """
    shape = tf.shape(gt_masks)
    b, n, h, w = shape[0], shape[1], shape[2], shape[3]
    r = tf.shape(rois)[1]
    rois = tf.stop_gradient(tf.cast(rois, tf.float32))
    # crop_and_resize reads uint8 directly: no float copy of the [B, N, H, W] masks.
    images = tf.reshape(gt_masks, tf.stack([b * n, h, w, 1]))
    m = float(mask_size)
    y1, x1, y2, x2 = tf.unstack(tf.reshape(rois, [-1, 4]), axis=-1)
    hf = tf.cast(h, tf.float32)
    wf = tf.cast(w, tf.float32)
    # First/last cell centres, in pixel-index coordinates (centre of pixel r is index r),
    # normalised by (size - 1) as crop_and_resize expects.
    ny1 = (y1 + 0.5 * (y2 - y1) / m - 0.5) / tf.maximum(hf - 1.0, 1.0)
    ny2 = (y2 - 0.5 * (y2 - y1) / m - 0.5) / tf.maximum(hf - 1.0, 1.0)
    nx1 = (x1 + 0.5 * (x2 - x1) / m - 0.5) / tf.maximum(wf - 1.0, 1.0)
    nx2 = (x2 - 0.5 * (x2 - x1) / m - 0.5) / tf.maximum(wf - 1.0, 1.0)
    boxes = tf.stack([ny1, nx1, ny2, nx2], axis=-1)
    box_idx = tf.reshape(tf.range(b)[:, None] * n + tf.cast(matched, tf.int32), [-1])
    crops = tf.image.crop_and_resize(
        images, boxes, box_idx, [mask_size, mask_size], extrapolation_value=0.0
    )
    crops = tf.reshape(crops, tf.stack([b, r, mask_size, mask_size]))
    return tf.cast(crops >= threshold, tf.float32)
