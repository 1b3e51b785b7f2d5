"""COCO RLE masks decoded by the ``MncDecodeRle`` custom op (used by the COCO pipeline)."""

from __future__ import annotations

import tensorflow as tf

from mnc_tf.ops._loader import load_library


def decode_rle(counts, height, width, flip=False):
    """COCO compressed RLE strings → uint8 masks ``[K, height, width]``.

    Args:
      counts: string ``[K]``, the ``counts`` of compressed RLEs (pycocotools format:
        column-major runs, 0s first) of masks of size ``height × width``.
      height, width: int32 scalars.
      flip: bool scalar; mirror every mask left-right.

    Returns:
      uint8 ``[K, height, width]`` of 0/1, row-major. Runs in C++ on the CPU, masks in
      parallel, without Python's GIL. A malformed string or one whose runs do not cover
      ``height * width`` pixels raises ``InvalidArgumentError`` naming the mask.
    """
    return load_library().mnc_decode_rle(
        counts=tf.convert_to_tensor(counts, tf.string),
        height=tf.convert_to_tensor(height, tf.int32),
        width=tf.convert_to_tensor(width, tf.int32),
        flip=tf.convert_to_tensor(flip, tf.bool),
    )
