"""Inference post-processing: per-class NMS → top-K → mask voting, in batched TF ops."""

import tensorflow as tf

from mnc_tf.core import box_ops, masks, nms


def detect(boxes, mask_probs, class_probs, valid, config):
    """Turn the merged cascade instances into padded detections.

    1. every (instance, class ≥ 1) pair is a candidate scored by the class probability; the
       ``detection_pre_nms_topk`` best enter NMS;
    2. per-class box NMS at ``detection_nms_iou`` (one NMS call per image: boxes are offset
       by class so different classes never overlap), keeping the best ``max_detections``;
    3. mask voting (``mask_voting``): a kept instance's mask becomes the average of the soft
       masks of the instances whose box IoU with it is ≥ ``mask_voting_iou``, weighted by their
       probability of the kept class (itself included; at most
       ``mask_voting_max_candidates`` of the heaviest candidates). With
       ``mask_voting_rebox`` (the released tester) the average is taken over the box enclosing
       the candidates and the instance is re-boxed to the tight box of its voted mask
       (> ``mask_binarize_threshold``), so a voted mask is not cut at the kept box's edge;
       otherwise it is re-sampled into the kept box.

    Args:
      boxes: float32 ``[B, J, 4]`` instance boxes (pixels).
      mask_probs: float32 ``[B, J, m, m]`` soft masks in those boxes.
      class_probs: float32 ``[B, J, N+1]`` softmax (column 0 = background).
      valid: bool ``[B, J]``.
      config: the model's :class:`mnc_tf.config.PostprocessConfig` (``config.postprocess``).

    Returns:
      dict ``boxes [B, K, 4], scores [B, K], classes [B, K] int32 (1..N, padding 0),
      masks [B, K, m, m], num_detections [B] int32`` with ``K = max_detections``.
    """
    boxes = tf.cast(boxes, tf.float32)
    mask_probs = tf.cast(mask_probs, tf.float32)
    class_probs = tf.cast(class_probs, tf.float32)
    num_classes = class_probs.shape[-1] - 1
    batch = tf.shape(boxes)[0]
    num_inst = tf.shape(boxes)[1]
    k_out = int(config.max_detections)

    scores = class_probs[:, :, 1:] * tf.cast(valid, tf.float32)[..., None]  # [B, J, N]
    flat = tf.reshape(scores, tf.stack([batch, num_inst * num_classes]))
    k_pre = tf.minimum(num_inst * num_classes, int(config.pre_nms_topk))
    cand_scores, cand = tf.math.top_k(flat, k=k_pre, sorted=True)
    cand_inst = cand // num_classes
    cand_cls = cand % num_classes + 1
    cand_boxes = tf.gather(boxes, cand_inst, batch_dims=1)
    offset = (tf.reduce_max(tf.abs(boxes)) + 1.0) * tf.cast(cand_cls, tf.float32)
    keep, keep_valid = nms.batched_nms(
        cand_boxes + offset[..., None],
        cand_scores,
        k_out,
        config.nms_iou,
        score_threshold=float(config.score_threshold),
    )
    det_inst = tf.gather(cand_inst, keep, batch_dims=1)  # [B, K]
    det_cls = tf.gather(cand_cls, keep, batch_dims=1)
    det_scores = tf.gather(cand_scores, keep, batch_dims=1)
    det_boxes = tf.gather(boxes, det_inst, batch_dims=1)
    own_masks = tf.gather(mask_probs, det_inst, batch_dims=1)  # [B, K, m, m]

    if config.mask_voting:
        det_masks, det_boxes = vote_masks(
            det_boxes, det_cls, own_masks, boxes, mask_probs, class_probs, valid, config
        )
    else:
        det_masks = own_masks

    keep_f = tf.cast(keep_valid, tf.float32)
    return {
        "boxes": det_boxes * keep_f[..., None],
        "scores": det_scores * keep_f,
        "classes": tf.where(keep_valid, det_cls, 0),
        "masks": det_masks * keep_f[..., None, None],
        "num_detections": tf.reduce_sum(tf.cast(keep_valid, tf.int32), axis=1),
    }


def vote_masks(det_boxes, det_classes, own_masks, boxes, mask_probs, class_probs, valid, config):
    """Mask voting (see :func:`detect`).

    Args:
      det_boxes: ``[B, K, 4]``; det_classes: int32 ``[B, K]``; own_masks: ``[B, K, m, m]``
      (used where no candidate has weight, e.g. padding rows).
      boxes, mask_probs, class_probs, valid: all instances, as in :func:`detect`.

    Returns:
      ``(masks [B, K, m, m], boxes [B, K, 4])``: the voted soft masks and the boxes they are
      in (the tight boxes with ``mask_voting_rebox``, else ``det_boxes``).
    """
    iou = box_ops.iou(det_boxes, boxes)  # [B, K, J]
    # Probability of each kept detection's class for every instance: [B, J, K] → [B, K, J].
    cls_scores = tf.transpose(tf.gather(class_probs, det_classes, axis=2, batch_dims=1), [0, 2, 1])
    usable = (iou >= config.mask_voting_iou) & valid[:, None, :]
    weights = tf.where(usable, cls_scores, 0.0)
    t = tf.minimum(int(config.mask_voting_max_candidates), tf.shape(boxes)[1])
    top_w, top_j = tf.math.top_k(weights, k=t, sorted=False)  # [B, K, T]
    src_boxes = tf.gather(boxes, top_j, batch_dims=1)  # [B, K, T, 4]
    # Index the flat [B·J, m, m] pool instead of gathering [B, K, T, m, m] copies.
    num_inst = tf.shape(boxes)[1]
    pool_idx = tf.range(tf.shape(boxes)[0])[:, None, None] * num_inst + top_j
    m = mask_probs.shape[-1]
    pool = tf.reshape(mask_probs, [-1, m, m])
    total = tf.reduce_sum(top_w, axis=2)  # [B, K]
    has_votes = total > 0

    def average(frame, size):
        """Weighted mean of the candidates re-sampled on ``frame [B, K, 4]`` (size²)."""
        resampled = masks.resample_masks(
            pool, src_boxes, frame[:, :, None, :], size=size, mask_indices=pool_idx
        )
        summed = tf.reduce_sum(top_w[..., None, None] * resampled, axis=2)
        return summed / tf.maximum(total, 1e-12)[..., None, None]

    if not config.mask_voting_rebox:
        voted = average(det_boxes, m)
        return tf.where(has_votes[..., None, None], voted, own_masks), det_boxes

    # Vote on the box enclosing the kept box and every weighted candidate, at 2m cells a
    # side (candidates overlap the kept box by IoU >= 0.5, so the enclosing box is at most
    # a few times larger), then re-box to the cells above the threshold.
    used = (top_w > 0)[..., None]
    far = tf.reduce_max(tf.abs(boxes)) + 1.0
    lo = tf.reduce_min(tf.where(used, src_boxes[..., :2], far), axis=2)
    hi = tf.reduce_max(tf.where(used, src_boxes[..., 2:], -far), axis=2)
    frame = tf.concat(
        [tf.minimum(lo, det_boxes[..., :2]), tf.maximum(hi, det_boxes[..., 2:])], axis=-1
    )
    g = 2 * m
    voted = average(frame, g)  # [B, K, g, g]
    on = voted > config.mask_threshold
    rows = tf.reduce_any(on, axis=3)  # [B, K, g]
    cols = tf.reduce_any(on, axis=2)
    found = tf.reduce_any(rows, axis=2) & has_votes

    def span(hit):
        first = tf.argmax(tf.cast(hit, tf.int32), axis=-1, output_type=tf.int32)
        last = g - 1 - tf.argmax(tf.cast(hit[..., ::-1], tf.int32), axis=-1, output_type=tf.int32)
        return tf.cast(first, tf.float32), tf.cast(last + 1, tf.float32)

    r0, r1 = span(rows)
    c0, c1 = span(cols)
    cell_h = (frame[..., 2] - frame[..., 0]) / g
    cell_w = (frame[..., 3] - frame[..., 1]) / g
    tight = tf.stack(
        [
            frame[..., 0] + r0 * cell_h,
            frame[..., 1] + c0 * cell_w,
            frame[..., 0] + r1 * cell_h,
            frame[..., 1] + c1 * cell_w,
        ],
        axis=-1,
    )
    new_boxes = tf.where(found[..., None], tight, det_boxes)
    new_masks = masks.resample_masks(voted, frame, new_boxes, size=m)
    return tf.where(has_votes[..., None, None], new_masks, own_masks), new_boxes
