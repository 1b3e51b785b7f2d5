"""Stage-1 anchors: ``A = len(ratios) · len(scales)`` boxes centred on every feature cell.

Convention (continuous pixels, DESIGN.md §4): feature cell ``(y, x)`` of a stride-``s`` map
covers pixels ``[y·s, (y+1)·s)``, so its anchors are centred at ``((y+0.5)·s, (x+0.5)·s)``
— the same centre as Faster R-CNN's ``[0, 15]`` base box with its ``+1`` widths. An anchor of
ratio ``r = h / w`` and scale ``k`` has area ``(base_size · k)²``: ``h = base·k·√r``,
``w = base·k/√r`` (no rounding). Order per cell: ratios outer, scales inner, as in
``generate_anchors.py``; cells row-major, matching the RPN head's ``[B, h, w, A]`` outputs.
"""

import math

import numpy as np
import tensorflow as tf


def cell_anchors(base_size, ratios, scales):
    """Anchors of one cell centred at the origin.

    Returns:
      float32 numpy ``[A, 4]`` ``y1, x1, y2, x2`` with ``A = len(ratios) · len(scales)``.
    """
    out = []
    for r in ratios:
        for k in scales:
            side = float(base_size) * float(k)
            h = side * math.sqrt(r)
            w = side / math.sqrt(r)
            out.append([-h / 2, -w / 2, h / 2, w / 2])
    return np.asarray(out, np.float32)


def grid_anchors(feature_height, feature_width, stride, base_anchors):
    """All anchors of a ``feature_height × feature_width`` map.

    Args:
      feature_height, feature_width: python ints or scalar int tensors.
      stride: feature stride in pixels.
      base_anchors: ``[A, 4]`` from :func:`cell_anchors`.

    Returns:
      float32 ``[feature_height · feature_width · A, 4]`` in input pixels.
    """
    base = tf.constant(base_anchors, tf.float32)
    cy = (tf.range(feature_height, dtype=tf.float32) + 0.5) * float(stride)
    cx = (tf.range(feature_width, dtype=tf.float32) + 0.5) * float(stride)
    cy, cx = tf.meshgrid(cy, cx, indexing="ij")  # [h, w]
    centres = tf.stack([cy, cx, cy, cx], axis=-1)[:, :, None, :]  # [h, w, 1, 4]
    return tf.reshape(centres + base[None, None], [-1, 4])


class AnchorGenerator:
    """Anchors for a feature map, from the config's ``anchor_*`` fields and the stride."""

    def __init__(self, base_size, ratios, scales, stride):
        self.base_size = float(base_size)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = tuple(float(s) for s in scales)
        self.stride = int(stride)
        self.base_anchors = cell_anchors(self.base_size, self.ratios, self.scales)

    @property
    def num_anchors(self):
        """``A``, anchors per feature cell."""
        return len(self.ratios) * len(self.scales)

    def __call__(self, features):
        """``features [B, h, w, C]`` → anchors float32 ``[h · w · A, 4]``."""
        shape = tf.shape(features)
        return grid_anchors(shape[1], shape[2], self.stride, self.base_anchors)
