"""Primitives shared by every part of mnc_tf: box arithmetic, NMS and mask pasting."""

from mnc_tf.core import box_ops, masks, nms

__all__ = ["box_ops", "masks", "nms"]
