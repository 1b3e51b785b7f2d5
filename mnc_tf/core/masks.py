"""Box-relative masks ↔ full-image masks, in TF ops (usable in graphs and SavedModels)."""

import tensorflow as tf


def paste_masks(masks, boxes, image_size, threshold=0.4):
    """Paste box-relative soft masks into full-image binary masks.

    A box-relative mask covers its box edge to edge: mask cell ``(i, j)`` of an ``m × m`` mask
    is centred at ``y1 + (i + 0.5) · (y2 - y1) / m``. Each image pixel ``(r, c)`` (centre
    ``r + 0.5``) inside the box samples the mask bilinearly; pixels outside the box are 0.

    Args:
      masks: float ``[K, m, m]`` probabilities.
      boxes: float32 ``[K, 4]`` ``y1, x1, y2, x2`` in the pixels of the target image.
      image_size: ``(H, W)`` ints or an int tensor ``[2]``.
      threshold: binarisation threshold (the released MNC code uses 0.4); ``None`` returns
        the soft float32 masks instead.

    Returns:
      uint8 ``[K, H, W]`` (or float32 when ``threshold is None``).
    """
    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    image_size = tf.cast(image_size, tf.int32)
    height, width = image_size[0], image_size[1]
    m = tf.cast(tf.shape(masks)[1], tf.float32)
    y1, x1, y2, x2 = [b[:, None] for b in tf.unstack(boxes, axis=-1)]
    bh = tf.maximum(y2 - y1, 1e-6)
    bw = tf.maximum(x2 - x1, 1e-6)
    rows = tf.range(tf.cast(height, tf.float32)) + 0.5  # pixel centres
    cols = tf.range(tf.cast(width, tf.float32)) + 0.5
    # Continuous mask-grid coordinate of every pixel centre, per box: [K, H] and [K, W].
    gy = (rows[None, :] - y1) / bh * m - 0.5
    gx = (cols[None, :] - x1) / bw * m - 0.5
    inside_y = tf.logical_and(rows[None, :] >= y1, rows[None, :] < y2)
    inside_x = tf.logical_and(cols[None, :] >= x1, cols[None, :] < x2)
    # Separable bilinear interpolation: resample rows then columns with one-hot weights.
    wy = _interp_weights(gy, tf.shape(masks)[1])  # [K, H, m]
    wx = _interp_weights(gx, tf.shape(masks)[2])  # [K, W, m]
    soft = tf.einsum("khi,kij,kwj->khw", wy, masks, wx)
    inside = tf.logical_and(inside_y[:, :, None], inside_x[:, None, :])
    soft = tf.where(inside, soft, 0.0)
    if threshold is None:
        return soft
    return tf.cast(soft >= threshold, tf.uint8)


def _interp_weights(coords, size):
    """Linear-interpolation weights ``[K, P, size]`` for continuous ``coords [K, P]``.

    Coordinates are clamped to the grid (edge replication), so a pixel inside the box but
    beyond the outermost cell centre takes the edge cell's value.
    """
    size_f = tf.cast(size, tf.float32)
    coords = tf.clip_by_value(coords, 0.0, size_f - 1.0)
    lo = tf.floor(coords)
    frac = coords - lo
    lo_i = tf.cast(lo, tf.int32)
    hi_i = tf.minimum(lo_i + 1, size - 1)
    return (
        tf.one_hot(lo_i, size) * (1.0 - frac)[..., None] + tf.one_hot(hi_i, size) * frac[..., None]
    )


def paste_masks_batched(masks, boxes, num_detections, image_size, threshold=0.4):
    """:func:`paste_masks` over a padded batch.

    Args:
      masks: ``[B, K, m, m]``; boxes: ``[B, K, 4]``; num_detections: int ``[B]``;
      image_size: ``(H, W)`` shared by the batch.

    Returns:
      uint8 ``[B, K, H, W]``; rows at or beyond ``num_detections`` are all zero.
    """
    pasted = tf.map_fn(
        lambda args: paste_masks(args[0], args[1], image_size, threshold=None),
        (tf.convert_to_tensor(masks, tf.float32), tf.convert_to_tensor(boxes, tf.float32)),
        fn_output_signature=tf.float32,
    )
    k = tf.shape(pasted)[1]
    valid = tf.range(k)[None, :] < tf.cast(num_detections, tf.int32)[:, None]
    pasted = tf.where(valid[:, :, None, None], pasted, 0.0)
    if threshold is None:
        return pasted
    return tf.cast(pasted >= threshold, tf.uint8)


def resample_masks(masks, src_boxes, dst_boxes, size=None, mask_indices=None):
    """Re-sample box-relative masks from their own boxes into other boxes' grids.

    Same convention as :func:`paste_masks`: cell ``i`` of an ``s × s`` grid on box ``dst`` is
    centred at ``y1 + (i + 0.5) · (y2 - y1) / s``; it samples the source mask bilinearly
    (edge cells replicated inside the source box) and is 0 outside the source box. Used by
    mask voting, which averages masks of different boxes in the frame of the kept box.

    One ``tf.image.crop_and_resize`` on the edge-padded masks does the sampling (the padding
    ring reproduces the edge replication), so the cost is ``O(s²)`` per output mask.

    Args:
      masks: float ``[..., m, m]`` probabilities on ``src_boxes``; or, with ``mask_indices``,
        a pool ``[M, m, m]`` from which ``mask_indices`` picks each output's source.
      src_boxes: float32 ``[..., 4]`` ``y1, x1, y2, x2`` of each output's source mask.
      dst_boxes: float32 ``[..., 4]``, broadcastable to ``src_boxes``.
      size: output side ``s`` (default ``m``).
      mask_indices: optional int ``[...]`` (the leading dims of ``src_boxes``) into the pool.

    Returns:
      float32 ``[..., s, s]`` (leading dims of ``src_boxes``).
    """
    masks = tf.convert_to_tensor(masks, tf.float32)
    src_boxes = tf.convert_to_tensor(src_boxes, tf.float32)
    dst_boxes = tf.broadcast_to(tf.convert_to_tensor(dst_boxes, tf.float32), tf.shape(src_boxes))
    m = masks.shape[-1]
    size = m if size is None else int(size)
    lead = tf.shape(src_boxes)[:-1]
    if mask_indices is None:
        pool = tf.reshape(masks, [-1, m, m])
        indices = tf.range(tf.shape(pool)[0])
    else:
        pool = masks
        indices = tf.reshape(tf.cast(mask_indices, tf.int32), [-1])
    padded = tf.pad(pool[..., None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    src = tf.reshape(src_boxes, [-1, 4])
    dst = tf.reshape(dst_boxes, [-1, 4])
    span_y = tf.maximum(src[:, 2] - src[:, 0], 1e-6)
    span_x = tf.maximum(src[:, 3] - src[:, 1], 1e-6)
    half_y = 0.5 * (dst[:, 2] - dst[:, 0]) / size
    half_x = 0.5 * (dst[:, 3] - dst[:, 1]) / size
    # First / last dst cell centre in the padded mask's index space (source cell k is index
    # k + 1), normalised by (m + 1) as crop_and_resize expects.
    to_index_y = lambda p: ((p - src[:, 0]) / span_y * m + 0.5) / (m + 1.0)
    to_index_x = lambda p: ((p - src[:, 1]) / span_x * m + 0.5) / (m + 1.0)
    boxes = tf.stack(
        [
            to_index_y(dst[:, 0] + half_y),
            to_index_x(dst[:, 1] + half_x),
            to_index_y(dst[:, 2] - half_y),
            to_index_x(dst[:, 3] - half_x),
        ],
        axis=-1,
    )
    out = tf.image.crop_and_resize(padded, boxes, indices, [size, size])[..., 0]
    # Cells whose centre lies outside the source box are 0.
    cells = (tf.range(size, dtype=tf.float32) + 0.5) / float(size)
    py = dst[:, 0:1] + cells * (dst[:, 2:3] - dst[:, 0:1])
    px = dst[:, 1:2] + cells * (dst[:, 3:4] - dst[:, 1:2])
    in_y = tf.cast((py >= src[:, 0:1]) & (py < src[:, 2:3]), tf.float32)
    in_x = tf.cast((px >= src[:, 1:2]) & (px < src[:, 3:4]), tf.float32)
    out = out * in_y[:, :, None] * in_x[:, None, :]
    return tf.reshape(out, tf.concat([lead, [size, size]], axis=0))
