"""Gradient clamps on the end-to-end box paths, as in the released MNC code.

The stage-2+ losses reach the box coordinates through RoI warping (DESIGN.md §1). The
released code bounds what reaches the regression outputs: its proposal layer clamps every
element of d(loss)/d(RPN deltas) and its stage bridge every element of d(loss)/d(stage-3
deltas) to ±1/``clip_base``, per image, with ``clip_base: 512`` for both in
``models/VGG16/mnc_5stage/train.prototxt`` (the layers' code defaults, 256 and 64, are
overridden there). Without such a bound the warped-feature gradient (tens of times the RPN's
own regression gradient) drags the proposals off the objects within a few hundred steps.

What is clamped differs slightly: the released layers clamp their own hand-written
derivatives (the proposal layer passes none for proposals or anchors that cross the image
border; the bridge differentiates as if its output were centre/size), while here the clamp
sits on the exact derivative of the decode → clip chain (docs/faithfulness.md).
"""

import tensorflow as tf


def clip_gradient(x, threshold, grad_scale):
    """Identity forward; backward clamps each element of the per-image gradient to
    ``±threshold``.

    Args:
      x: any float tensor (e.g. box deltas ``[B, ..., 4]``).
      threshold: python float (None or <= 0: no clamp).
      grad_scale: scalar float32, d(differentiated loss)/d(per-image loss) — the batch mean,
        the replica division and the mixed-precision loss scale — so the clamp applies to the
        gradient of one image's loss, as in the one-image-per-GPU Caffe code.
    """
    if threshold is None or threshold <= 0:
        return x

    @tf.custom_gradient
    def _clip(x, scale):
        def grad(g):
            limit = tf.cast(threshold * scale, g.dtype)
            return tf.clip_by_value(g, -limit, limit), tf.zeros_like(scale)

        return tf.identity(x), grad

    return _clip(x, tf.cast(grad_scale, x.dtype))
