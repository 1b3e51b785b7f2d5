"""Stage 1 training targets: anchor labels (IoU 0.7 / 0.3) and a balanced sample of 256."""

import tensorflow as tf

from mnc_tf.modeling import matching, sampling


def label_anchors(anchors, gt_boxes, gt_valid, image_size, keys, config):
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
      config: :class:`mnc_tf.MNCConfig`.

    Returns:
      ``(labels [B, A] int32 (1 positive, 0 negative, -1 ignored), matched_boxes [B, A, 4])``.
    """
    max_iou, matched, iou = matching.match_to_gt(anchors, gt_boxes, gt_valid)
    if config.rpn_allowed_border >= 0:
        border = float(config.rpn_allowed_border)
        h = image_size[:, 0][:, None]
        w = image_size[:, 1][:, None]
        inside = (
            (anchors[None, :, 0] >= -border)
            & (anchors[None, :, 1] >= -border)
            & (anchors[None, :, 2] <= h + border)
            & (anchors[None, :, 3] <= w + border)
        )
    else:
        inside = tf.ones_like(max_iou, tf.bool)
    # Best anchor(s) of every GT, among usable anchors, count as positive even below 0.7.
    iou_inside = tf.where(inside[:, :, None], iou, -1.0)
    gt_best = tf.reduce_max(iou_inside, axis=1, keepdims=True)  # [B, 1, N]
    is_best = tf.reduce_any((iou_inside == gt_best) & (gt_best > 0.0), axis=2)  # [B, A]
    positive = inside & ((max_iou >= config.rpn_positive_iou) | is_best)
    negative = inside & (max_iou < config.rpn_negative_iou) & ~positive

    total = int(config.rpn_batch_size_per_image)
    max_pos = max(1, int(total * config.rpn_positive_fraction))
    pos_sel = sampling.select_random(
        positive, tf.fill(tf.shape(max_iou)[:1], max_pos), keys, max_pos
    )
    num_neg = total - sampling.count(pos_sel)
    # 1 - keys: an independent-enough ordering for negatives from the same stream.
    neg_sel = sampling.select_random(negative, num_neg, 1.0 - keys, total)
    labels = tf.where(pos_sel, 1, tf.where(neg_sel, 0, -1))
    matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)
    return tf.cast(labels, tf.int32), matched_boxes
