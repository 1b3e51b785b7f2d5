"""Stage 1 training targets: anchor labels (IoU 0.7 / 0.3) and a balanced sample of 256."""

import tensorflow as tf

from mnc_tf.modeling import matching, sampling


def label_anchors(anchors, gt_boxes, gt_valid, image_size, keys, config, return_inside=False):
    """Label and sample anchors as Faster R-CNN's ``anchor_target_layer``.

    Positive: IoU ≥ ``rpn_positive_iou`` with some GT, or the best anchor (ties included) of
    some GT; negative: max IoU < ``rpn_negative_iou`` and not positive (every anchor of an
    image without GT). Anchors crossing the image border by more than
    ``rpn_allowed_border`` (if ≥ 0) are ignored. Then at most
    ``rpn_batch_size_per_image · rpn_positive_fraction`` positives are sampled at random and
    negatives fill the rest of ``rpn_batch_size_per_image``.

    Args:
      anchors: float32 ``[A, 4]``.
      gt_boxes: float32 ``[B, N, 4]``; gt_valid: bool ``[B, N]``.
      image_size: float32 ``[B, 2]`` valid ``(h, w)``.
      keys: float32 ``[B, A]`` uniform randomness (see :mod:`mnc_tf.modeling.sampling`).
      config: :class:`mnc_tf.config.RPNConfig` (the model's ``config.rpn``).

    Returns:
      ``(labels [B, A] int32 (1 positive, 0 negative, -1 ignored), matched_boxes [B, A, 4])``;
      with ``return_inside``, also bool ``[B, A]`` (the anchors that can be labelled).
    """
    max_iou, matched, iou = matching.match_to_gt(anchors, gt_boxes, gt_valid)
    inside = anchors_inside(anchors, image_size, config.allowed_border, tf.shape(max_iou))
    # Best anchor(s) of every GT, among usable anchors, count as positive even below 0.7.
    iou_inside = tf.where(inside[:, :, None], iou, -1.0)
    gt_best = tf.reduce_max(iou_inside, axis=1, keepdims=True)  # [B, 1, N]
    is_best = tf.reduce_any((iou_inside == gt_best) & (gt_best > 0.0), axis=2)  # [B, A]
    positive = inside & ((max_iou >= config.positive_iou) | is_best)
    negative = inside & (max_iou < config.negative_iou) & ~positive

    total = int(config.batch_size_per_image)
    max_pos = max(1, int(total * config.positive_fraction))
    pos_sel = sampling.select_random(
        positive, tf.fill(tf.shape(max_iou)[:1], max_pos), keys, max_pos
    )
    num_neg = total - sampling.count(pos_sel)
    # 1 - keys: an independent-enough ordering for negatives from the same stream.
    neg_sel = sampling.select_random(negative, num_neg, 1.0 - keys, total)
    labels = tf.where(pos_sel, 1, tf.where(neg_sel, 0, -1))
    matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)
    if return_inside:
        return tf.cast(labels, tf.int32), matched_boxes, inside
    return tf.cast(labels, tf.int32), matched_boxes


def anchors_inside(anchors, image_size, allowed_border, shape):
    """bool ``[B, A]`` (``shape``): anchors within ``allowed_border`` pixels of each image
    (all of them when ``allowed_border < 0``)."""
    if allowed_border < 0:
        return tf.ones(shape, tf.bool)
    border = float(allowed_border)
    h = image_size[:, 0][:, None]
    w = image_size[:, 1][:, None]
    return (
        (anchors[None, :, 0] >= -border)
        & (anchors[None, :, 1] >= -border)
        & (anchors[None, :, 2] <= h + border)
        & (anchors[None, :, 3] <= w + border)
    )


def mix_index_labels(labels, inside, roi_anchors, roi_fg, roi_bg):
    """The released ``MIX_INDEX`` relabelling (``anchor_target_layer.py``).

    After the anchor sample, the anchor behind every sampled stage-2 RoI that came from a
    proposal is labelled 0 if the RoI is background and then 1 if it is foreground (box IoU
    with the GT), so it joins the RPN losses (also the box loss, toward the anchor's own best
    GT). Anchors outside ``inside`` keep their label, as the released layer only sees those.

    Args:
      labels: int32 ``[B, A]`` from :func:`label_anchors`; inside: bool ``[B, A]``.
      roi_anchors: int32 ``[B, R]`` anchor index of every RoI (-1: not from a proposal).
      roi_fg, roi_bg: bool ``[B, R]`` sampled foreground / background RoIs.

    Returns:
      int32 ``[B, A]``.
    """
    shape = tf.shape(labels)
    b, a = shape[0], shape[1]
    flat_size = b * a

    def marks(selected):
        use = selected & (roi_anchors >= 0)
        flat = tf.range(b)[:, None] * a + tf.maximum(roi_anchors, 0)
        flat = tf.where(use, flat, flat_size)  # a dump slot past the end
        flat = tf.reshape(flat, [-1])
        hits = tf.math.unsorted_segment_max(tf.ones_like(flat), flat, flat_size + 1)
        return tf.reshape(hits[:flat_size] > 0, shape) & inside

    labels = tf.where(marks(roi_bg), 0, labels)
    return tf.where(marks(roi_fg), 1, labels)
