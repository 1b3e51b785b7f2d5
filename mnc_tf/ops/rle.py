"""COCO RLE masks rasterised by the ``MncRasterizeMasks`` custom op (the COCO pipeline's
mask work: decode, flip, resize and pad in one pass, C++, outside Python's GIL)."""

from __future__ import annotations

import tensorflow as tf

from mnc_tf.ops._loader import load_library


def rasterize_masks(counts, source_size, target_size, flip, padded_size):
    """A batch of COCO compressed RLE strings → padded uint8 masks ``[B, N, Hp, Wp]``.

    Mask ``(b, n)`` is ``counts[b, n]`` decoded at ``source_size[b]``, mirrored left-right
    if ``flip[b]``, resized to ``target_size[b]`` exactly as
    ``tf.image.resize(mask, target_size[b], "bilinear") >= 0.5`` (bit-identical; no
    resampling when the sizes are equal) and zero-padded bottom/right to ``padded_size``.

    Args:
      counts: string ``[B, N]``, ``counts`` of compressed RLEs (pycocotools format:
        column-major runs, 0s first); ``""`` is an all-zero mask (padding rows).
      source_size: int32 ``[B, 2]`` ``(H, W)`` the RLEs of image ``b`` encode.
      target_size: int32 ``[B, 2]`` ``(h, w)`` to resize to, each ≤ ``padded_size``.
      flip: bool ``[B]``.
      padded_size: int32 ``[2]`` ``(Hp, Wp)``; static when given as Python ints.

    Returns:
      uint8 ``[B, N, Hp, Wp]`` of 0/1. Masks are rasterised in parallel on the CPU. A
      malformed string, or one whose runs do not cover ``H * W`` pixels, raises
      ``InvalidArgumentError`` naming ``counts[b, n]``.
    """
    return load_library().mnc_rasterize_masks(
        counts=tf.convert_to_tensor(counts, tf.string),
        source_size=tf.convert_to_tensor(source_size, tf.int32),
        target_size=tf.convert_to_tensor(target_size, tf.int32),
        flip=tf.convert_to_tensor(flip, tf.bool),
        padded_size=tf.convert_to_tensor(padded_size, tf.int32),
    )


def decode_rle(counts, height, width, flip=False):
    """COCO compressed RLE strings ``[K]`` → uint8 masks ``[K, height, width]`` (0/1,
    row-major), mirrored left-right if ``flip``: :func:`rasterize_masks` for one image at
    its own size."""
    size = tf.stack([tf.convert_to_tensor(height, tf.int32), tf.convert_to_tensor(width, tf.int32)])
    masks = rasterize_masks(
        tf.convert_to_tensor(counts, tf.string)[None],
        size[None],
        size[None],
        tf.reshape(tf.convert_to_tensor(flip, tf.bool), [1]),
        size,
    )
    return masks[0]
