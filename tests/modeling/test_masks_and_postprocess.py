"""Mask targets, mask re-sampling, per-class NMS and mask voting vs NumPy references."""

import numpy as np
import tensorflow as tf

from mnc_tf.config import MNCConfig
from mnc_tf.core.masks import resample_masks
from mnc_tf.modeling.postprocess import detect
from mnc_tf.modeling.stage2_mask.mask_targets import mask_targets


def np_bilinear_zero(img, y, x):
    """Bilinear read at pixel-index coords (centre of pixel r is r); 0 outside [0, size-1]."""
    h, w = img.shape
    if y < 0 or y > h - 1 or x < 0 or x > w - 1:
        return 0.0
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = y - y0, x - x0
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def test_mask_targets_match_numpy_crop():
    h = w = 40
    gt = np.zeros((1, 2, h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    gt[0, 0] = (yy - 20) ** 2 + (xx - 15) ** 2 < 100
    gt[0, 1, 5:30, 22:38] = 1
    rois = np.array([[[8, 3, 33, 29], [2, 20, 33, 39.5], [10, 10, 20, 20]]], np.float32)
    matched = np.array([[0, 1, 1]], np.int32)
    m = 7
    out = mask_targets(gt, rois, matched, m).numpy()
    assert out.shape == (1, 3, m, m) and set(np.unique(out)) <= {0.0, 1.0}
    for r in range(3):
        y1, x1, y2, x2 = rois[0, r]
        ref = np.zeros((m, m))
        for i in range(m):
            for j in range(m):
                py = y1 + (i + 0.5) * (y2 - y1) / m - 0.5
                px = x1 + (j + 0.5) * (x2 - x1) / m - 0.5
                ref[i, j] = np_bilinear_zero(gt[0, matched[0, r]].astype(float), py, px)
        np.testing.assert_array_equal(out[0, r], (ref >= 0.5).astype(np.float32))
    assert out[0, 2].sum() == 0  # RoI outside its GT mask


def np_resample(mask, src, dst, s):
    m = mask.shape[0]
    out = np.zeros((s, s))
    for i in range(s):
        py = dst[0] + (i + 0.5) * (dst[2] - dst[0]) / s
        for j in range(s):
            px = dst[1] + (j + 0.5) * (dst[3] - dst[1]) / s
            if not (src[0] <= py < src[2] and src[1] <= px < src[3]):
                continue
            gy = np.clip((py - src[0]) / (src[2] - src[0]) * m - 0.5, 0, m - 1)
            gx = np.clip((px - src[1]) / (src[3] - src[1]) * m - 0.5, 0, m - 1)
            out[i, j] = np_bilinear_zero(mask, gy, gx)
    return out


def test_resample_masks_matches_numpy_and_identity():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 6, 6)).astype(np.float32)
    src = np.array([[0, 0, 12, 12], [4, 2, 20, 9], [3, 3, 9, 15]], np.float32)
    dst = np.array([[2, 1, 14, 11], [0, 0, 24, 24], [3, 3, 9, 15]], np.float32)
    out = resample_masks(masks, src, dst, size=5).numpy()
    for k in range(3):
        np.testing.assert_allclose(out[k], np_resample(masks[k], src[k], dst[k], 5), atol=1e-5)
    same = resample_masks(masks, src, src).numpy()  # own box, own size: identity
    np.testing.assert_allclose(same, masks, atol=1e-6)


def np_iou1(a, b):
    y1, x1 = max(a[0], b[0]), max(a[1], b[1])
    y2, x2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(y2 - y1, 0) * max(x2 - x1, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def np_detect(boxes, masks, probs, valid, cfg):
    """Per-class greedy NMS, top K by score, then mask voting — loops, one image."""
    cands = []
    for c in range(1, probs.shape[1]):
        order = [
            j
            for j in np.argsort(-probs[:, c])
            if valid[j] and probs[j, c] > cfg.postprocess.score_threshold
        ]
        kept = []
        for j in order:
            if all(np_iou1(boxes[j], boxes[k]) <= cfg.postprocess.nms_iou for k in kept):
                kept.append(j)
        cands += [(probs[j, c], j, c) for j in kept]
    cands.sort(key=lambda t: -t[0])
    cands = cands[: cfg.postprocess.max_detections]
    out_masks = []
    for _score, j, c in cands:
        num = np.zeros(masks.shape[1:])
        den = 0.0
        for i in range(len(boxes)):
            if valid[i] and np_iou1(boxes[j], boxes[i]) >= cfg.postprocess.mask_voting_iou:
                num += probs[i, c] * np_resample(masks[i], boxes[i], boxes[j], masks.shape[1])
                den += probs[i, c]
        out_masks.append(num / den)
    return cands, out_masks


def test_detect_per_class_nms_and_mask_voting_match_numpy():
    rng = np.random.default_rng(4)
    j, n, m = 24, 3, 6
    centres = rng.uniform(10, 50, (4, 2))
    base = np.concatenate([centres - 8, centres + 8], 1)
    boxes = (base[rng.integers(0, 4, j)] + rng.normal(scale=2.0, size=(j, 4))).astype(np.float32)
    masks = rng.uniform(size=(j, m, m)).astype(np.float32)
    logits = rng.normal(scale=2.0, size=(j, n + 1))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    valid = np.ones(j, bool)
    valid[-3:] = False
    # Voting in the kept box (the re-boxing rule is tested in test_released_parity.py).
    cfg = MNCConfig(
        max_detections=8, detection_score_threshold=0.05, mask_size=m, mask_voting_rebox=False
    )
    out = detect(boxes[None], masks[None], probs[None], valid[None], cfg.postprocess)
    cands, ref_masks = np_detect(boxes, masks, probs, valid, cfg)
    k = int(out["num_detections"][0])
    assert k == len(cands) == 8
    np.testing.assert_allclose(out["scores"][0, :k], [c[0] for c in cands], rtol=1e-6)
    np.testing.assert_array_equal(out["classes"][0, :k], [c[2] for c in cands])
    np.testing.assert_allclose(out["boxes"][0, :k], boxes[[c[1] for c in cands]], rtol=1e-6)
    np.testing.assert_allclose(out["masks"][0, :k], np.stack(ref_masks), atol=1e-5)
    # Voting actually changed something (several overlapping candidates per detection).
    assert not np.allclose(out["masks"][0, :k], masks[[c[1] for c in cands]], atol=1e-3)

    no_vote = detect(
        boxes[None],
        masks[None],
        probs[None],
        valid[None],
        cfg.replace(mask_voting=False).postprocess,
    )
    np.testing.assert_allclose(no_vote["masks"][0, :k], masks[[c[1] for c in cands]])


def test_detect_pads_empty_results():
    cfg = MNCConfig(max_detections=5, detection_score_threshold=0.5, mask_size=4)
    probs = np.tile([[0.9, 0.05, 0.05]], (6, 1)).astype(np.float32)  # all background
    out = detect(
        tf.zeros([1, 6, 4]) + [0, 0, 5, 5],
        tf.ones([1, 6, 4, 4]),
        probs[None],
        tf.ones([1, 6], tf.bool),
        cfg.postprocess,
    )
    assert int(out["num_detections"][0]) == 0
    assert out["boxes"].shape == (1, 5, 4) and out["masks"].shape == (1, 5, 4, 4)
    assert out["classes"].dtype == tf.int32 and np.all(out["classes"] == 0)
    assert np.all(out["masks"] == 0) and np.all(out["scores"] == 0)
