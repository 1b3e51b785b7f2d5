"""Loss terms of the three stages, each normalised **per image** and returned as ``[B]``.

Per-image normalisation (as the paper's one-image-per-GPU training) makes the batch mean
independent of how a global batch is split across replicas. All maths in float32.
"""

import tensorflow as tf

# The loss terms; a loss name is ``<term>_loss`` plus its stage's suffix (``mask_loss_4``).
TERMS = ("rpn_cls", "rpn_box", "mask", "cls", "det_cls", "box")


def loss_weights(config):
    """Weight of every loss term (:data:`TERMS`) from the model's
    :class:`~mnc_tf.config.LossWeights` (``config.loss_weights``)."""
    return {
        "rpn_cls": float(config.rpn_cls),
        "rpn_box": float(config.rpn_box),
        "mask": float(config.mask),
        "cls": float(config.cls),
        "det_cls": float(config.det_cls),
        "box": float(config.box),
    }


def weighted_sum(values, terms, weights):
    """``Σ weights[term] · values[name]`` over the ``(name, term)`` pairs, in their order."""
    return tf.add_n([weights[term] * values[name] for name, term in terms])


def smooth_l1(x, beta):
    """Elementwise smooth-L1: ``0.5·x²/beta`` if ``|x| < beta`` else ``|x| - beta/2``."""
    ax = tf.abs(x)
    if beta <= 0:
        return ax
    return tf.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def _per_image_mean(values, weights):
    """``sum(values·weights) / max(sum(weights), 1)`` over all axes but the first."""
    axes = list(range(1, values.shape.rank))
    num = tf.reduce_sum(values * weights, axis=axes)
    den = tf.reduce_sum(weights, axis=axes)
    return num / tf.maximum(den, 1.0)


def rpn_losses(logits, deltas, labels, target_deltas, beta):
    """Stage 1: objectness BCE and box smooth-L1.

    Args:
      logits: float32 ``[B, A]``; deltas / target_deltas: float32 ``[B, A, 4]``.
      labels: int32 ``[B, A]`` (1 positive, 0 negative, -1 ignored).
      beta: smooth-L1 transition point.

    Returns:
      ``(cls [B], box [B])``: BCE averaged over sampled anchors; smooth-L1 summed over the
      positives' coordinates and divided by the number of sampled anchors (Faster R-CNN).
    """
    sampled = tf.cast(labels >= 0, tf.float32)
    positive = tf.cast(labels == 1, tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=logits)
    cls = _per_image_mean(bce, sampled)
    l1 = tf.reduce_sum(smooth_l1(deltas - tf.stop_gradient(target_deltas), beta), axis=-1)
    box = tf.reduce_sum(l1 * positive, axis=1) / tf.maximum(tf.reduce_sum(sampled, axis=1), 1.0)
    return cls, box


def mask_loss(logits, targets, fg):
    """Stage 2: per-pixel sigmoid cross-entropy averaged over pixels and foreground RoIs.

    Args:
      logits, targets: float32 ``[B, R, m, m]``; fg: bool ``[B, R]``.

    Returns:
      ``[B]`` (0 for an image without foreground RoIs).
    """
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    per_roi = tf.reduce_mean(bce, axis=[2, 3])
    return _per_image_mean(per_roi, tf.cast(fg, tf.float32))


def class_loss(logits, labels, valid):
    """Stage 3: softmax cross-entropy over ``N+1`` classes, averaged over valid RoIs.

    Args:
      logits: float32 ``[B, R, N+1]``; labels: int32 ``[B, R]``; valid: bool ``[B, R]``.
    """
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _per_image_mean(ce, tf.cast(valid, tf.float32))


def box_loss(deltas, labels, targets, fg, valid, beta):
    """Stage 3: class-specific box smooth-L1 on foreground RoIs / number of valid RoIs.

    Args:
      deltas: float32 ``[B, R, N+1, 4]``; labels: int32 ``[B, R]`` GT class of each RoI;
      targets: float32 ``[B, R, 4]``; fg, valid: bool ``[B, R]``.
    """
    pred = tf.gather(deltas, tf.maximum(labels, 0), batch_dims=2)  # [B, R, 4]
    l1 = tf.reduce_sum(smooth_l1(pred - tf.stop_gradient(targets), beta), axis=-1)
    num = tf.reduce_sum(l1 * tf.cast(fg, tf.float32), axis=1)
    return num / tf.maximum(tf.reduce_sum(tf.cast(valid, tf.float32), axis=1), 1.0)
