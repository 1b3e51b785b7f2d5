"""Stage 1 output: class-agnostic proposals (decode → clip → min size ↔ top-k → NMS).

The returned boxes are *gathered* from the decoded anchors, so they stay differentiable with
respect to the RPN box deltas: this is the path through which the later stages' losses reach
the RPN box regression (DESIGN.md §1).
"""

import tensorflow as tf

from mnc_tf.core import box_ops, nms


def generate_proposals(
    logits,
    deltas,
    anchors,
    image_size,
    pre_nms_topk,
    post_nms_topk,
    nms_iou=0.7,
    min_size=16.0,
    min_size_before_topk=False,
    image_scale=None,
    return_anchor_indices=False,
):
    """Proposals for a batch.

    Args:
      logits: float32 ``[B, A_all]`` objectness logits.
      deltas: float32 ``[B, A_all, 4]``.
      anchors: float32 ``[A_all, 4]`` pixels.
      image_size: float32 ``[B, 2]`` valid ``(h, w)`` of each image (boxes are clipped to it).
      pre_nms_topk: python int, boxes kept by objectness before NMS.
      post_nms_topk: python int ``P``, boxes kept after NMS (output size).
      nms_iou: NMS IoU threshold.
      min_size: boxes with a side below this (pixels, after clipping) are dropped.
      min_size_before_topk: drop small boxes among all anchors before the pre-NMS top-k (the
        released proposal layer) instead of among the top-k.
      image_scale: optional float32 ``[B]``: ``min_size`` is multiplied by it (a size in
        original-image pixels, as the released code's ``min_size * im_info[2]``).
      return_anchor_indices: also return int32 ``[B, P]``, the anchor behind every proposal
        (-1 for invalid rows).

    Returns:
      ``(boxes [B, P, 4], scores [B, P], valid [B, P] bool)`` (plus the anchor indices):
      boxes in pixels sorted by objectness probability; invalid rows are zero boxes with
      score 0.
    """
    num_anchors = tf.shape(anchors)[0]
    k = tf.minimum(num_anchors, pre_nms_topk)
    min_size = tf.constant(float(min_size), tf.float32)
    if image_scale is not None:
        min_size = min_size * tf.cast(image_scale, tf.float32)[:, None]  # [B, 1]

    def big_enough(boxes):
        boxes = tf.stop_gradient(boxes)
        h = boxes[..., 2] - boxes[..., 0]
        w = boxes[..., 3] - boxes[..., 1]
        return (h >= min_size) & (w >= min_size) & (h > 0) & (w > 0)

    if min_size_before_topk:
        all_boxes = box_ops.clip(box_ops.decode(deltas, anchors[None]), image_size)
        keep_all = big_enough(all_boxes)
        ranked = tf.where(keep_all, logits, tf.float32.min)
        top_logits, top_idx = tf.math.top_k(ranked, k=k, sorted=True)  # [B, k]
        boxes = tf.gather(all_boxes, top_idx, batch_dims=1)
        keep = tf.gather(keep_all, top_idx, batch_dims=1)
    else:
        top_logits, top_idx = tf.math.top_k(logits, k=k, sorted=True)  # [B, k]
        top_deltas = tf.gather(deltas, top_idx, batch_dims=1)  # [B, k, 4]
        top_anchors = tf.gather(anchors, top_idx)  # [B, k, 4]
        boxes = box_ops.clip(box_ops.decode(top_deltas, top_anchors), image_size)
        keep = big_enough(boxes)
    scores = tf.where(keep, tf.sigmoid(top_logits), -1.0)
    idx, valid = nms.batched_nms(boxes, scores, post_nms_topk, nms_iou, score_threshold=-0.5)
    out_boxes = tf.gather(boxes, idx, batch_dims=1)  # differentiable w.r.t. deltas
    out_scores = tf.gather(scores, idx, batch_dims=1)
    out_boxes = tf.where(valid[..., None], out_boxes, 0.0)
    out_scores = tf.where(valid, out_scores, 0.0)
    if return_anchor_indices:
        anchor_idx = tf.where(valid, tf.gather(top_idx, idx, batch_dims=1), -1)
        return out_boxes, out_scores, valid, anchor_idx
    return out_boxes, out_scores, valid
