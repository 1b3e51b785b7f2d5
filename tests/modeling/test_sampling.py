"""Anchor labelling (stage 1) and RoI sampling (stage 2): thresholds, fractions, determinism."""

import numpy as np
import tensorflow as tf

from mnc_tf.config import MNCConfig
from mnc_tf.modeling import sampling
from mnc_tf.modeling.anchors import cell_anchors, grid_anchors
from mnc_tf.modeling.stage1_rpn.anchor_labeler import label_anchors
from mnc_tf.modeling.stage2_mask.roi_sampler import sample_rois


def np_iou(a, b):
    y1 = np.maximum(a[:, None, 0], b[None, :, 0])
    x1 = np.maximum(a[:, None, 1], b[None, :, 1])
    y2 = np.minimum(a[:, None, 2], b[None, :, 2])
    x2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_select_random_counts():
    rng = np.random.default_rng(0)
    cand = rng.uniform(size=(3, 50)) < 0.4
    keys = rng.uniform(size=(3, 50)).astype(np.float32)
    num = np.array([5, 100, 0], np.int32)
    sel = sampling.select_random(cand, num, keys, 100).numpy()
    assert not np.any(sel & ~cand)
    np.testing.assert_array_equal(sel.sum(1), np.minimum(num, cand.sum(1)))


def test_label_anchors_thresholds_and_balance():
    cfg = MNCConfig(rpn_batch_size_per_image=64, rpn_allowed_border=-1.0)
    anchors = grid_anchors(8, 8, 8, cell_anchors(8, (0.5, 1.0, 2.0), (2, 4))).numpy()
    gt = np.array([[[10, 10, 30, 34], [40, 8, 62, 24], [-1, -1, -1, -1]]], np.float32)
    gt_valid = np.array([[True, True, False]])
    keys = tf.random.stateless_uniform([1, len(anchors)], seed=[1, 2])
    labels, matched = label_anchors(anchors, gt, gt_valid, np.array([[64.0, 64.0]]), keys, cfg.rpn)
    labels = labels.numpy()[0]
    iou = np_iou(anchors, gt[0, :2])
    max_iou = iou.max(1)
    pos, neg = labels == 1, labels == 0
    assert pos.sum() <= 32 and pos.sum() + neg.sum() == 64
    best_of_gt = np.isclose(iou, iou.max(0, keepdims=True)).any(1)
    assert np.all((max_iou[pos] >= 0.7) | best_of_gt[pos])
    assert np.all(max_iou[neg] < 0.3)
    assert np.all(best_of_gt[best_of_gt & (max_iou < 0.7)] == pos[best_of_gt & (max_iou < 0.7)])
    # Positives regress towards their best GT.
    np.testing.assert_allclose(matched.numpy()[0][pos], gt[0][iou[pos].argmax(1)])


def test_label_anchors_ignores_cross_border_and_empty_images():
    cfg = MNCConfig(rpn_batch_size_per_image=32, rpn_allowed_border=0.0)
    anchors = grid_anchors(4, 4, 8, cell_anchors(8, (1.0,), (2, 6))).numpy()
    gt = -np.ones((1, 2, 4), np.float32)
    keys = tf.random.stateless_uniform([1, len(anchors)], seed=[3, 4])
    labels, _ = label_anchors(
        anchors, gt, np.zeros((1, 2), bool), np.array([[32.0, 32.0]]), keys, cfg.rpn
    )
    labels = labels.numpy()[0]
    outside = (
        (anchors[:, 0] < 0) | (anchors[:, 1] < 0) | (anchors[:, 2] > 32) | (anchors[:, 3] > 32)
    )
    assert np.all(labels[outside] == -1)
    assert not np.any(labels == 1)  # no GT → only negatives
    assert (labels == 0).sum() == min(32, (~outside).sum())


def _roi_case(seed=0):
    rng = np.random.default_rng(seed)
    gt = np.array([[20, 20, 60, 60], [70, 10, 110, 50], [-1, -1, -1, -1]], np.float32)
    jitter = rng.normal(scale=6, size=(100, 4))
    props = np.concatenate(
        [
            gt[rng.integers(0, 2, 100)] + jitter,
            rng.uniform(0, 100, (100, 2)).repeat(2, 1) + [0, 0, 20, 25],
        ]
    )
    return props.astype(np.float32), gt


def test_sample_rois_fractions_and_labels():
    cfg = MNCConfig(roi_batch_size_per_image=64, roi_fg_fraction=0.25, roi_bg_split=None)
    props, gt = _roi_case()
    keys = tf.random.stateless_uniform([1, 203], seed=[5, 6])
    out = sample_rois(
        props[None],
        np.ones((1, 200), bool),
        gt[None],
        np.array([[2, 3, -1]]),
        np.array([[True, True, False]]),
        keys,
        cfg.roi_sampling,
    )
    rois, valid, fg = out["rois"].numpy()[0], out["valid"].numpy()[0], out["fg"].numpy()[0]
    assert rois.shape == (64, 4) and valid.all()
    assert fg.sum() == 16  # 25 % of 64: there are many more fg candidates than that
    iou = np_iou(rois, gt[:2]).max(1)
    assert np.all(iou[fg] >= 0.5) and np.all(iou[~fg] < 0.5)
    np.testing.assert_allclose(out["max_iou"].numpy()[0], iou, atol=1e-5)
    labels = out["labels"].numpy()[0]
    assert set(labels[fg]) <= {2, 3} and np.all(labels[~fg] == 0)
    np.testing.assert_array_equal(labels[fg], np.array([2, 3])[np_iou(rois[fg], gt[:2]).argmax(1)])
    # roi_bg_split=None: background from [0.1, 0.5) first; [0, 0.1) fills what is missing
    # (the released split is tested in test_released_parity.py).
    cand = np.concatenate([props, gt[:2]])
    cand_iou = np_iou(cand, gt[:2]).max(1)
    n_main = ((cand_iou >= 0.1) & (cand_iou < 0.5)).sum()
    assert ((iou[~fg] >= 0.1).sum()) == min(48, n_main)


def test_sample_rois_includes_gt_and_pads():
    cfg = MNCConfig(roi_batch_size_per_image=16)
    gt = np.array([[[10, 10, 30, 30], [-1, -1, -1, -1]]], np.float32)
    far = np.array([[[50, 50, 60, 60], [0, 0, 0, 0]]], np.float32)
    keys = tf.random.stateless_uniform([1, 4], seed=[0, 1])
    out = sample_rois(
        far,
        np.array([[True, False]]),
        gt,
        np.array([[1, -1]]),
        np.array([[True, False]]),
        keys,
        cfg.roi_sampling,
    )
    # Candidates: 1 valid proposal (bg) + 1 GT (fg): the rest are invalid padding rows.
    assert out["valid"].numpy().sum() == 2
    assert out["fg"].numpy().sum() == 1
    np.testing.assert_allclose(out["rois"].numpy()[0][out["fg"].numpy()[0]], gt[0, :1])
    assert np.all(out["rois"].numpy()[0][~out["valid"].numpy()[0]] == 0)


def test_deterministic_seeds_independent_of_batch_position():
    boxes = np.random.default_rng(0).uniform(0, 50, (3, 2, 4)).astype(np.float32)
    ids = np.array([7, 11, 13])
    full = sampling.image_seeds(3, 5, 42, True, image_ids=ids)
    part = sampling.image_seeds(1, 5, 42, True, image_ids=ids[2:])
    u_full = sampling.uniform(full, 20, sampling.SALT_ROIS).numpy()
    u_part = sampling.uniform(part, 20, sampling.SALT_ROIS).numpy()
    np.testing.assert_array_equal(u_full[2], u_part[0])
    assert not np.allclose(u_full[0], u_full[1])  # different images, different streams
    # Without image ids the targets' fingerprint plays the same role.
    f_full = sampling.image_seeds(3, 5, 42, True, gt_boxes=boxes).numpy()
    f_part = sampling.image_seeds(1, 5, 42, True, gt_boxes=boxes[1:2]).numpy()
    np.testing.assert_array_equal(f_full[1], f_part[0])
    # Another step or salt gives another stream.
    other = sampling.uniform(sampling.image_seeds(3, 6, 42, True, image_ids=ids), 20, 2).numpy()
    assert not np.allclose(other, u_full)
    assert not np.allclose(sampling.uniform(full, 20, sampling.SALT_ANCHORS).numpy(), u_full)
