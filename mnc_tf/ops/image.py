"""Image ops of the data pipeline (``MncFlipLeftRight``)."""

from __future__ import annotations

import tensorflow as tf

from mnc_tf.ops._loader import load_library


def flip_left_right(image):
    """uint8 image ``[H, W, C]`` mirrored left-right: ``tf.reverse(image, [1])``, with a
    SIMD byte shuffle for 3 channels (~3x TF's CPU reverse kernel on 600-px images)."""
    return load_library().mnc_flip_left_right(image=tf.convert_to_tensor(image, tf.uint8))
