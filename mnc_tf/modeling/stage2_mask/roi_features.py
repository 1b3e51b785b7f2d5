"""RoI warping of the shared features for stages 2–3 (and 4–5), batched over images.

Uses ``mnc_tf.layers.RoIWarp`` (the fused custom op with exact feature and box gradients)
when it is available; otherwise :class:`CropAndResizeRoIWarp`, the same computation from
stock ops (``tf.image.crop_and_resize`` has box gradients too).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mnc_tf")
class CropAndResizeRoIWarp(keras.layers.Layer):
    """Bilinear warp of each box to ``crop × crop`` then ``crop/pooled`` max-pool.

    Sample ``i`` of a box ``[y1, y2)`` is the feature map read at pixel
    ``y1 + (i + 0.5)·(y2 - y1)/crop``, i.e. feature index ``that · spatial_scale - 0.5``
    (feature cell ``k`` is centred at pixel ``(k + 0.5)/spatial_scale``).

    Call: ``(features [B, h, w, C], boxes [R, 4] pixels, box_indices [R] int32)`` →
    float32 ``[R, pooled, pooled, C]``.
    """

    supports_jit = False

    def __init__(self, crop_size=28, pooled_size=14, spatial_scale=1.0 / 16, **kwargs):
        super().__init__(**kwargs)
        self.crop_size = int(crop_size)
        self.pooled_size = int(pooled_size)
        self.spatial_scale = float(spatial_scale)

    def call(self, features, boxes, box_indices):
        features = tf.cast(features, tf.float32)
        shape = tf.shape(features)
        hf = tf.cast(shape[1], tf.float32)
        wf = tf.cast(shape[2], tf.float32)
        c = float(self.crop_size)
        s = self.spatial_scale
        y1, x1, y2, x2 = tf.unstack(tf.cast(boxes, tf.float32), axis=-1)
        ny1 = ((y1 + 0.5 * (y2 - y1) / c) * s - 0.5) / tf.maximum(hf - 1.0, 1.0)
        ny2 = ((y2 - 0.5 * (y2 - y1) / c) * s - 0.5) / tf.maximum(hf - 1.0, 1.0)
        nx1 = ((x1 + 0.5 * (x2 - x1) / c) * s - 0.5) / tf.maximum(wf - 1.0, 1.0)
        nx2 = ((x2 - 0.5 * (x2 - x1) / c) * s - 0.5) / tf.maximum(wf - 1.0, 1.0)
        crops = tf.image.crop_and_resize(
            features,
            tf.stack([ny1, nx1, ny2, nx2], axis=-1),
            tf.cast(box_indices, tf.int32),
            [self.crop_size, self.crop_size],
        )
        k = self.crop_size // self.pooled_size
        if k > 1:
            crops = tf.nn.max_pool2d(crops, k, k, "VALID")
        return crops

    def get_config(self):
        config = super().get_config()
        config.update(
            crop_size=self.crop_size,
            pooled_size=self.pooled_size,
            spatial_scale=self.spatial_scale,
        )
        return config


def build_roi_warp(crop_size, pooled_size, spatial_scale, name="roi_warp"):
    """The RoI warp layer: ``mnc_tf.layers.RoIWarp`` if present, else the stock-op version.

    The layer is pinned to float32: its boxes are pixel coordinates, which float16 (mixed
    precision) would round to half pixels.
    """
    try:
        from mnc_tf.layers import RoIWarp  # noqa: PLC0415  (optional until the op lands)
    except ImportError:
        RoIWarp = None
    if RoIWarp is None:
        RoIWarp = CropAndResizeRoIWarp
    return RoIWarp(crop_size, pooled_size, spatial_scale, name=name, dtype="float32")


def warp_rois(roi_warp, features, rois):
    """Warp a padded batch of RoIs.

    Args:
      roi_warp: a layer from :func:`build_roi_warp`.
      features: ``[B, h, w, C]``.
      rois: float32 ``[B, R, 4]`` pixels.

    Returns:
      float32 ``[B·R, S, S, C]`` (image-major order).
    """
    b = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    boxes = tf.reshape(rois, [-1, 4])
    box_indices = tf.reshape(tf.tile(tf.range(b)[:, None], tf.stack([1, r])), [-1])
    return roi_warp(features, boxes, box_indices)
