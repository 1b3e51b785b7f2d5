"""Stage 2 training input: sample RoIs from the proposals (+ GT boxes) for stages 2 and 3."""

import tensorflow as tf

from mnc_tf.modeling import matching, sampling


def sample_rois(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, keys, config):
    """Pick ``R = roi_batch_size_per_image`` RoIs per image, as the released MNC code.

    Candidates are the proposals plus (``add_gt_as_proposals``) the GT boxes, labelled by
    :func:`mnc_tf.modeling.matching.label_rois` (the rule stage 4 applies again). At most
    ``round(R · roi_fg_fraction)`` foreground (max IoU ≥ ``roi_fg_iou``) are drawn at random.
    The ``R - #fg`` background slots: with ``roi_bg_split = (a, b)`` (released
    ``_sample_rois``: 0.85, 0.15), ``round(a · slots)`` are drawn from IoU
    ``[roi_bg_iou_low, roi_bg_iou_high)`` and ``round(b · slots)`` from ``[0, roi_bg_iou_low)``,
    each capped by what is available (so fewer than ``R`` RoIs may be valid); with ``None``,
    ``[low, high)`` first and ``[0, low)`` fills what is missing. Selection is by index only:
    the returned RoI coordinates are gathered from ``proposals`` and stay differentiable
    w.r.t. them.

    Args:
      proposals: float32 ``[B, P, 4]``; proposal_valid: bool ``[B, P]``.
      gt_boxes: float32 ``[B, N, 4]``; gt_labels: int32 ``[B, N]``; gt_valid: bool ``[B, N]``.
      keys: float32 ``[B, P + N]`` uniform randomness.
      config: :class:`mnc_tf.config.ROISamplingConfig` (the model's ``config.roi_sampling``).

    Returns:
      dict of ``[B, R]`` tensors plus ``rois [B, R, 4]``: ``valid`` (a real sample),
      ``fg`` (foreground by box IoU), ``matched`` (int32 GT index), ``labels`` (int32 GT
      class for fg, else 0), ``max_iou``, ``index`` (int32 candidate index: ``< P`` for a
      proposal, ``P + n`` for GT box ``n``).
    """
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    if config.add_gt_as_proposals:
        candidates = tf.concat([proposals, gt_boxes], axis=1)
        cand_valid = tf.concat([proposal_valid, gt_valid], axis=1)
    else:
        candidates, cand_valid = proposals, proposal_valid
        keys = keys[:, : tf.shape(proposals)[1]]
    cand = matching.label_rois(candidates, cand_valid, gt_boxes, gt_labels, gt_valid, config.fg_iou)
    max_iou, fg = cand["max_iou"], cand["fg"]
    bg_main = cand_valid & (max_iou < config.bg_iou_high) & (max_iou >= config.bg_iou_low)
    bg_fill = cand_valid & (max_iou < config.bg_iou_low)

    total = int(config.batch_size_per_image)
    max_fg = max(1, int(round(total * config.fg_fraction)))
    batch = tf.shape(max_iou)[0]
    fg_sel = sampling.select_random(fg, tf.fill([batch], max_fg), keys, max_fg)
    if config.bg_split is not None:
        # Released split: fixed, rounded shares of the background slots (numpy and tf.round
        # both round half to even), each capped by the candidates in its IoU range.
        slots = tf.cast(total - sampling.count(fg_sel), tf.float64)
        share_main, share_fill = (float(f) for f in config.bg_split)
        n_main = tf.cast(tf.round(slots * share_main), tf.int32)
        n_fill = tf.cast(tf.round(slots * share_fill), tf.int32)
        bg_main = sampling.select_random(bg_main & ~fg, n_main, keys, total)
        bg_fill = sampling.select_random(bg_fill & ~fg, n_fill, keys, total)
    else:
        bg_main, bg_fill = bg_main & ~fg, bg_fill & ~fg
    # Priorities: chosen fg > bg in [low, high) > bg in [0, low) > not usable; the random key
    # orders entries within a class. top_k then takes fg first and fills with background.
    priority = tf.where(fg_sel, 3.0, tf.where(bg_main, 2.0, tf.where(bg_fill, 1.0, -2.0)))
    priority = priority + keys
    k = tf.minimum(total, tf.shape(priority)[1])
    top, idx = tf.math.top_k(priority, k=k, sorted=True)
    valid = top >= 1.0
    # Fewer candidates than R (tiny proposal sets): pad to the fixed R with invalid rows.
    pad = total - k
    idx = tf.reshape(tf.pad(idx, [[0, 0], [0, pad]]), [-1, total])
    valid = tf.reshape(tf.pad(valid, [[0, 0], [0, pad]]), [-1, total])
    rois = tf.gather(candidates, idx, batch_dims=1)
    rois = tf.where(valid[..., None], rois, 0.0)
    roi_fg = tf.gather(fg_sel, idx, batch_dims=1) & valid
    roi_matched = tf.gather(cand["matched"], idx, batch_dims=1)
    # Sampled foreground keeps its candidate's label (``label_rois``); the rest is class 0.
    labels = tf.where(roi_fg, tf.gather(cand["labels"], idx, batch_dims=1), 0)
    return {
        "rois": rois,
        "valid": valid,
        "fg": roi_fg,
        "matched": roi_matched,
        "labels": tf.cast(labels, tf.int32),
        "max_iou": tf.gather(max_iou, idx, batch_dims=1),
        "index": idx,
    }
