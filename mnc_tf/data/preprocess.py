"""Pure-TF image/target preprocessing shared by the input pipeline and the SavedModel export.

Conventions (docs/CONTRACTS.md):

- images are RGB ``[H, W, 3]``, values 0..255. Nothing here normalises them: the model
  subtracts its backbone's mean / divides by its std itself, so one pipeline serves every
  backbone and the exported model accepts raw pixels.
- boxes are ``[N, 4]`` float32 ``y1, x1, y2, x2`` in pixels of the image they accompany.
- masks are uint8 ``[N, H, W]`` binary, aligned pixel for pixel with the image.
- ``image_info`` is float32 ``[4, 2]``: original ``(h, w)``; resized valid ``(h, w)``;
  scale ``(sy, sx)`` = resized / original; offset ``(0, 0)`` (TF Model Garden layout).

Order used by the pipeline: resize (optionally scale-jittered) → flip of the valid region
(the element's decision, :func:`flip_coin`) → pad bottom/right to a fixed size (in
``padded_batch``). Flipping before padding keeps a flipped image in the top-left corner
like every other image.

All functions are graph-safe (no Python branching on tensor values).
"""

from __future__ import annotations

import tensorflow as tf

from mnc_tf.core import box_ops

# The resize is the model's (mnc_tf.preprocessing, the Preprocessing layer's): one
# implementation for the pipelines, the export, evaluation and prediction.
from mnc_tf.preprocessing import (  # noqa: F401 - re-exported
    image_info,
    resize_image,
    scaled_size,
)


def resize_masks(masks, size):
    """Resize binary masks ``[N, H, W]`` to ``size = (h, w)`` → uint8 ``[N, h, w]``.

    Bilinear then ≥ 0.5, i.e. the same sampling grid as :func:`resize_image`, so mask edges
    stay aligned with image edges when upsampling (nearest-neighbour would shift them by up
    to half a source pixel).
    """
    masks = tf.convert_to_tensor(masks)
    resized = tf.image.resize(tf.cast(masks[..., None], tf.float32), size)
    return tf.cast(resized[..., 0] >= 0.5, tf.uint8)


def scale_boxes(boxes, image_info_):
    """Boxes ``[N, 4]`` of the original image → resized image, via ``image_info[2]``."""
    sy, sx = image_info_[2, 0], image_info_[2, 1]
    return boxes * tf.stack([sy, sx, sy, sx])


def flip_left_right(image, boxes, masks):
    """Mirror an unpadded image, its boxes and masks horizontally.

    Args:
      image: ``[h, w, C]``; boxes: ``[N, 4]`` yxyx pixels of this image; masks: ``[N, h, w]``
        or ``None`` (masks still RLE strings, flipped when rasterised).

    Returns:
      The flipped ``(image, boxes, masks)``; a box ``[y1, x1, y2, x2]`` becomes
      ``[y1, w - x2, y2, w - x1]`` (continuous pixel-edge coordinates).
    """
    flipped_boxes = flip_boxes(boxes, tf.shape(image)[1])
    masks = None if masks is None else tf.reverse(masks, [2])
    return tf.reverse(image, [1]), flipped_boxes, masks


def flip_boxes(boxes, width):
    """Boxes ``[N, 4]`` yxyx of an image ``width`` pixels wide, mirrored left-right:
    ``[y1, x1, y2, x2]`` → ``[y1, width - x2, y2, width - x1]`` (the one box flip; the COCO
    loader uses it on original-resolution boxes when it flips while decoding)."""
    boxes = tf.convert_to_tensor(boxes)
    width = tf.cast(width, boxes.dtype)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    return tf.stack([y1, width - x2, y2, width - x1], axis=-1)


def _coin(seed, probability=0.5):
    return tf.random.stateless_uniform([], seed=seed) < probability


_FLIP_STREAM = 2  # the random stream of an element's flip decision (see _subseed)


def flip_coin(seed):
    """The horizontal-flip decision (bool scalar, probability 0.5) of the element with int64
    ``seed``. The COCO pipeline draws it once per element and carries it in the element
    (``flip``): the loader, :func:`augment_example` and the mask rasteriser all read it."""
    return _coin(_subseed(seed, _FLIP_STREAM))


def random_scale_factor(seed, scale_jitter):
    """Uniform factor in ``scale_jitter = (low, high)`` for ``short_side`` and ``max_side``."""
    low, high = scale_jitter
    return tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)


def augment_example(
    image,
    boxes,
    labels,
    masks,
    *,
    short_side,
    max_side,
    max_size=None,
    flip=None,
    scale_jitter=None,
    seed=None,
):
    """Resize and (randomly) flip / scale-jitter one decoded example; no padding.

    Args:
      image: uint8 ``[H, W, 3]`` original image.
      boxes: float32 ``[n, 4]`` yxyx original pixels; labels: int32 ``[n]``;
      masks: uint8 ``[n, H, W]``, or ``None`` when they are rasterised later (the COCO
        pipeline's RLE path): then ``None`` is returned for them.
      short_side, max_side: resize targets.
      max_size: optional ``(H_max, W_max)`` the resized image must fit (the padded size).
      flip: ``None`` / ``False`` (no flip), or the element's flip decision (``True`` or a bool
        scalar tensor, drawn by :func:`flip_coin`): mirror the resized example.
      scale_jitter: ``None`` or ``(low, high)`` factor on both sides.
      seed: int64/int32 scalar tensor (needed with ``scale_jitter``); every random choice
        derives a stateless seed from it, so an element's augmentation is a pure function
        of ``seed``.

    Returns:
      ``(image [h, w, 3], image_info [4, 2], boxes [n, 4], labels [n], masks [n, h, w] uint8)``
      in resized-image pixels; the image is uint8 (resampled pixels rounded) when the input
      is uint8, float32 otherwise.
    """
    if scale_jitter and seed is None:
        raise ValueError("seed is required when scale_jitter is on")
    shape = tf.shape(image)
    if scale_jitter:
        factor = random_scale_factor(_subseed(seed, 1), scale_jitter)
        short_side = tf.cast(short_side, tf.float32) * factor
        max_side = tf.cast(max_side, tf.float32) * factor
    new_h, new_w = scaled_size(shape[0], shape[1], short_side, max_side, max_size=max_size)
    new_size = tf.stack([new_h, new_w])
    info = image_info((shape[0], shape[1]), (new_h, new_w))
    # Images already at the target size (pre-resized datasets, scale 1) skip the resampling,
    # which is an identity then but still costs a pass over every mask.
    same_size = tf.reduce_all(tf.equal(new_size, shape[:2]))
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        # uint8 in, uint8 out: the pipeline flips, pads and batches a quarter of the bytes
        # and casts the finished batch (resized pixels rounded to the nearest level, as
        # Detectron2's uint8 resize does; <= 0.5 of 255 from the float resize).
        def resample(im):
            return tf.saturate_cast(
                tf.round(tf.image.resize(tf.cast(im, tf.float32), new_size)), tf.uint8
            )
    else:
        image = tf.cast(image, tf.float32)

        def resample(im):
            return tf.image.resize(im, new_size)

    if masks is None:
        image = tf.cond(same_size, lambda: image, lambda: resample(image))
    else:
        image, masks = tf.cond(
            same_size,
            lambda: (image, masks),
            lambda: (resample(image), resize_masks(masks, new_size)),
        )
    boxes = box_ops.clip(scale_boxes(boxes, info), tf.cast(new_size, tf.float32))
    if flip is not None and flip is not False:
        flip = tf.convert_to_tensor(flip, tf.bool)
        if masks is None:
            image, boxes = tf.cond(
                flip, lambda: flip_left_right(image, boxes, None)[:2], lambda: (image, boxes)
            )
        else:
            image, boxes, masks = tf.cond(
                flip, lambda: flip_left_right(image, boxes, masks), lambda: (image, boxes, masks)
            )
    return image, info, boxes, labels, masks


def _subseed(seed, stream):
    """Stateless ``[2]`` seed for random stream ``stream`` of an element's ``seed``."""
    return tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])
