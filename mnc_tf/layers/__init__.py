"""Keras layers of mnc_tf."""

from mnc_tf.layers.dense import HeadDense
from mnc_tf.layers.roi_warp import RoIWarp

__all__ = ["HeadDense", "RoIWarp"]
