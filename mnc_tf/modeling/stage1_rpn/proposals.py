"""Stage 1 output: class-agnostic proposals (decode → clip → min size → top-k → NMS).

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

    Returns:
      ``(boxes [B, P, 4], scores [B, P], valid [B, P] bool)``: boxes in pixels sorted by
      objectness probability; invalid rows are zero boxes with score 0.
    """
    num_anchors = tf.shape(anchors)[0]
    k = tf.minimum(num_anchors, pre_nms_topk)
    top_logits, top_idx = tf.math.top_k(logits, k=k, sorted=True)  # [B, k]
    top_deltas = tf.gather(deltas, top_idx, batch_dims=1)  # [B, k, 4]
    top_anchors = tf.gather(anchors, top_idx)  # [B, k, 4]
    boxes = box_ops.clip(box_ops.decode(top_deltas, top_anchors), image_size)
    keep = box_ops.valid_mask(tf.stop_gradient(boxes), float(min_size))
    scores = tf.where(keep, tf.sigmoid(top_logits), -1.0)
    idx, valid = nms.batched_nms(boxes, scores, post_nms_topk, nms_iou, score_threshold=-0.5)
    out_boxes = tf.gather(boxes, idx, batch_dims=1)  # differentiable w.r.t. deltas
    out_scores = tf.gather(scores, idx, batch_dims=1)
    out_boxes = tf.where(valid[..., None], out_boxes, 0.0)
    out_scores = tf.where(valid, out_scores, 0.0)
    return out_boxes, out_scores, valid
