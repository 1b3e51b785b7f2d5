"""RoI warping of the shared features for stages 2–3 (and 4–5), batched over images.

``mnc_tf.layers.RoIWarp`` samples box corners (``crop_and_resize``'s convention: sample
``i`` at feature index ``y1·s + i·(y2 - y1)·s/(K - 1)``). The model's convention is
cell centres, the same as the mask targets and :func:`mnc_tf.core.masks.paste_masks`: sample
``i`` of a box ``[y1, y2)`` reads the image point ``y1 + (i + 0.5)·(y2 - y1)/K``, and feature
cell ``k`` is centred at pixel ``(k + 0.5)/s``. :func:`warp_rois` converts the boxes (a linear,
differentiable map), so warped features and mask targets see the same points.
"""

import tensorflow as tf

from mnc_tf.layers import RoIWarp


def build_roi_warp(crop_size, pooled_size, spatial_scale, name="roi_warp"):
    """The RoI warp layer in the current dtype policy's compute dtype: under
    ``mixed_bfloat16`` it takes and returns bfloat16 features (the op's CPU kernels read them
    natively and sample in float32); its boxes stay float32 pixel coordinates whatever the
    policy (float16 / bfloat16 would round them to half or whole pixels)."""
    return RoIWarp(crop_size, pooled_size, spatial_scale, name=name)


def corner_aligned_boxes(rois, crop_size, spatial_scale):
    """Boxes ``[..., 4]`` whose corner samples are the cell-centre samples of ``rois``."""
    y1, x1, y2, x2 = tf.unstack(rois, axis=-1)
    half_y = 0.5 * (y2 - y1) / crop_size
    half_x = 0.5 * (x2 - x1) / crop_size
    shift = 0.5 / spatial_scale
    return tf.stack(
        [y1 + half_y - shift, x1 + half_x - shift, y2 - half_y - shift, x2 - half_x - shift],
        axis=-1,
    )


def warp_rois(roi_warp, features, rois):
    """Warp a padded batch of RoIs.

    Args:
      roi_warp: a layer from :func:`build_roi_warp`.
      features: ``[B, h, w, C]``.
      rois: float32 ``[B, R, 4]`` pixels (gradients flow back to them).

    Returns:
      ``[B·R, S, S, C]`` (image-major order) in the layer's compute dtype.
    """
    b = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    boxes = corner_aligned_boxes(
        tf.reshape(tf.cast(rois, tf.float32), [-1, 4]), roi_warp.crop_size, roi_warp.spatial_scale
    )
    box_indices = tf.reshape(tf.tile(tf.range(b)[:, None], tf.stack([1, r])), [-1])
    return roi_warp(features, boxes, box_indices)
