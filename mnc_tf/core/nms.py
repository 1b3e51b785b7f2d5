"""The one NMS wrapper of mnc_tf: batched, fixed-shape, index-returning.

NMS only *selects*: it returns indices so callers gather the (still differentiable) boxes
themselves, which keeps the box coordinates in the gradient path (DESIGN.md §1).
"""

import tensorflow as tf


def batched_nms(boxes, scores, max_output_size, iou_threshold, score_threshold=float("-inf")):
    """Greedy NMS per image of a batch, padded to a fixed number of outputs.

    Uses TF's ``NonMaxSuppressionV3`` kernel once per image (``tf.map_fn`` over the batch, not
    over boxes), so it runs in graphs and exports to SavedModels.

    Args:
      boxes: float ``[B, N, 4]`` ``y1, x1, y2, x2`` (gradients are not propagated; gather
        the boxes with the returned indices to keep them differentiable).
      scores: float ``[B, N]``.
      max_output_size: python int ``K``.
      iou_threshold: boxes overlapping a kept, higher-scoring box by IoU > this are removed.
      score_threshold: boxes with score <= this are never selected.

    Returns:
      ``(indices, valid)``: int32 ``[B, K]`` into ``N`` sorted by decreasing score (padding
      0) and bool ``[B, K]`` marking the real entries.
    """
    if max_output_size < 1:
        raise ValueError(f"max_output_size must be >= 1, got {max_output_size}")
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    scores = tf.stop_gradient(tf.cast(scores, tf.float32))

    def one_image(args):
        b, s = args
        idx = tf.image.non_max_suppression(
            b,
            s,
            max_output_size,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
        )
        n = tf.shape(idx)[0]
        idx = tf.pad(idx, [[0, max_output_size - n]])
        return idx, tf.range(max_output_size) < n

    indices, valid = tf.map_fn(
        one_image,
        (boxes, scores),
        fn_output_signature=(
            tf.TensorSpec([max_output_size], tf.int32),
            tf.TensorSpec([max_output_size], tf.bool),
        ),
    )
    return indices, valid
