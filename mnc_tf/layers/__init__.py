"""Keras layers of mnc_tf."""

from mnc_tf.layers.roi_warp import RoIWarp

__all__ = ["RoIWarp"]
