"""Primitives shared by every part of mnc_tf: box arithmetic and mask pasting."""

from mnc_tf.core import box_ops, masks

__all__ = ["box_ops", "masks"]
