"""Our TF training rules against NumPy transcriptions of the released MNC code.

References: ``tests/modeling/released_mnc.py`` (written from daijifeng001/MNC). Where the
conventions differ (inclusive ``+ 1`` boxes there, pixel edges here) the tests state the
exact relation they check.
"""

import numpy as np
import pytest
import released_mnc as ref
import tensorflow as tf

from mnc_tf.config import MNCConfig
from mnc_tf.core.masks import paste_masks
from mnc_tf.modeling.cascade import Cascade, cascade_stages
from mnc_tf.modeling.matching import label_rois
from mnc_tf.modeling.postprocess import vote_masks
from mnc_tf.modeling.stage2_mask.roi_sampler import sample_rois
from mnc_tf.modeling.stage3_class.class_targets import class_labels, mask_overlap


def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[0:h, 0:w]
    return (((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 < 1).astype(np.uint8)


def _tight_box(mask):
    """Inclusive ``(x1, y1, x2, y2)`` of a binary mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()])


# ---------------------------------------------------------------- mask-level labels


def _our_iou(pred, rois, gt_masks, matched):
    return mask_overlap(
        np.asarray(pred, np.float32)[None],
        np.asarray(rois, np.float32)[None],
        np.asarray(gt_masks)[None],
        np.asarray(matched, np.int32)[None],
        0.4,
    ).numpy()[0]


def test_issue_example_square_left_strip_is_background():
    """GT: a 100×100 square; RoI: its left 56 px (box IoU 0.56); prediction: the RoI's left
    30 px. Released rule: IoU 3000 / 10000 = 0.30 → background. The old rule (GT cropped to
    the RoI, binarised at 0.5) gave 15/28 = 0.536 → foreground."""
    h = w = 140
    gt = np.zeros((1, h, w), np.uint8)
    gt[0, 20:120, 20:120] = 1
    roi = np.array([20, 20, 120, 76], np.float32)  # y1, x1, y2, x2: 100 × 56
    m = 28
    pred = np.zeros((m, m), np.float32)
    pred[:, :15] = 0.9  # 15 of 28 cells = 30 of 56 px
    iou = _our_iou(pred[None], roi[None], gt, [0])
    np.testing.assert_allclose(iou, [0.30], atol=1e-6)
    labels = class_labels(np.array([[2]]), np.array([[True]]), iou[None], 0.5)
    np.testing.assert_array_equal(labels, [[0]])
    # The released code on the same case (inclusive boxes).
    label, ref_iou = ref.mask_layer_label(
        pred, (20, 20, 75, 119), (20, 20, 119, 119), gt[0, 20:120, 20:120], 2
    )
    assert label == 0 and ref_iou == pytest.approx(0.30)
    # The rule this replaces: IoU in the RoI frame against the cropped GT (all ones there).
    assert np.mean(pred >= 0.5) == pytest.approx(15 / 28) and 15 / 28 > 0.5


def test_mask_level_labels_hand_cases():
    h = w = 48
    gt = np.zeros((2, h, w), np.uint8)
    gt[0, 10:30, 10:30] = 1  # 400 px
    gt[1, 0:10, 0:10] = 1
    m = 10
    rois = np.array(
        [
            [10, 10, 30, 40],  # RoI sticks out 10 px to the right of the object
            [10, 10, 30, 40],
            [10, 10, 30, 30],
            [10, 10, 30, 30],
        ],
        np.float32,
    )
    pred = np.zeros((4, m, m), np.float32)
    pred[0, :, :] = 0.9  # whole RoI: 600 px, IoU 400 / 600
    pred[1, :, : m * 2 // 3 + 1] = 0.9  # left 2/3 of 30 px ~ the object: IoU ≈ 1
    pred[2, :, :] = 0.45  # above 0.4 (released threshold), below 0.5: IoU 1
    pred[3, :5, :] = 0.9  # top half: IoU 0.5
    iou = _our_iou(pred, rois, gt, [0, 0, 0, 0])
    np.testing.assert_allclose(iou[[0, 2, 3]], [400 / 600, 1.0, 0.5], atol=1e-6)
    assert 0.95 < iou[1] <= 1.0
    labels = class_labels(
        np.array([[1, 1, 1, 1]]), np.array([[True, True, True, False]]), iou[None], 0.5
    )
    np.testing.assert_array_equal(labels, [[1, 1, 1, 0]])  # box-background stays 0
    assert np.all(class_labels(np.array([[3]]), np.array([[True]]), None, 0.0) == 3)


def test_mask_level_labels_match_released_numpy():
    rng = np.random.default_rng(0)
    h, w, m = 40, 44, 7
    cases = exact = 0
    for _ in range(6):
        n = 3
        gt = np.stack(
            [_ellipse(h, w, *rng.uniform([8, 8, 4, 4], [32, 36, 12, 14])) for _ in range(n)]
        )
        gt = gt[gt.reshape(n, -1).sum(1) > 0]
        r = 16
        matched = rng.integers(0, len(gt), r)
        rois_ref, rois_ours = [], []
        for g in matched:
            x1, y1, x2, y2 = _tight_box(gt[g])
            jx = rng.integers(-4, 5, 2)
            jy = rng.integers(-4, 5, 2)
            box = (
                int(np.clip(x1 + jx[0], 0, w - 2)),
                int(np.clip(y1 + jy[0], 0, h - 2)),
                0,
                0,
            )
            box = (
                box[0],
                box[1],
                int(np.clip(x2 + jx[1], box[0] + 1, w - 1)),
                int(np.clip(y2 + jy[1], box[1] + 1, h - 1)),
            )
            rois_ref.append(box)
            rois_ours.append(ref.to_ours(box))
        # Smooth random predictions (bilinear up-sampling of 3×3 noise).
        pred = np.stack(
            [tf.image.resize(rng.uniform(size=(3, 3, 1)), (m, m)).numpy()[..., 0] for _ in range(r)]
        ).astype(np.float32)
        ours = _our_iou(pred, np.stack(rois_ours), gt, matched)
        for i, g in enumerate(matched):
            gt_box = _tight_box(gt[g])
            gt_crop = gt[g][gt_box[1] : gt_box[3] + 1, gt_box[0] : gt_box[2] + 1]
            _, ref_iou = ref.mask_layer_label(pred[i], rois_ref[i], gt_box, gt_crop, 1)
            cases += 1
            exact += abs(ours[i] - ref_iou) < 1e-6
            # cv2 and TF interpolate in different float orders: a pixel whose value sits on
            # the 0.4 threshold may flip, nothing more.
            assert abs(ours[i] - ref_iou) < 0.03, (i, ours[i], ref_iou)
    assert exact >= 0.9 * cases, (exact, cases)


# ---------------------------------------------------------------- RoI sampling


def _sampling_case(ious, batch, seed):
    """Proposals with the given IoUs against one GT box ``[0, 0, 100, 100]``."""
    p = len(ious)
    gt = np.array([[[0, 0, 100, 100]]], np.float32).repeat(batch, 0)
    props = np.zeros((batch, p, 4), np.float32)
    props[:, :, 2] = 100
    props[:, :, 3] = 100 * np.asarray(ious)  # IoU = width / 100
    keys = tf.random.stateless_uniform([batch, p + 1], seed=[seed, 1])
    cfg = MNCConfig(roi_batch_size_per_image=64)
    out = sample_rois(
        props,
        np.ones((batch, p), bool),
        gt,
        np.ones((batch, 1), np.int32),
        np.ones((batch, 1), bool),
        keys,
        cfg.roi_sampling,
    )
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize(
    "n_fg,n_main,n_fill",
    [(40, 100, 100), (5, 100, 100), (30, 10, 100), (30, 100, 3), (0, 20, 5), (12, 0, 0)],
)
def test_roi_sample_counts_match_released(n_fg, n_main, n_fill):
    rng = np.random.default_rng(n_fg * 7 + n_main)
    ious = np.concatenate(
        [
            rng.uniform(0.5, 0.99, n_fg),
            rng.uniform(0.1, 0.49, n_main),
            rng.uniform(0.01, 0.09, n_fill),
        ]
    ).astype(np.float32)
    batch = 4
    out = _sampling_case(ious, batch, seed=n_fg)
    # The released layer on the same overlaps (+ the GT box itself, overlap 1).
    overlaps = np.concatenate([ious, [1.0]])
    fg_ref, bg_ref = ref.sample_rois(overlaps, rng)
    main_ref = np.sum(overlaps[bg_ref] >= 0.1)
    for b in range(batch):
        valid = out["valid"][b]
        iou = out["max_iou"][b]
        assert np.sum(out["fg"][b]) == len(fg_ref)
        assert np.sum(valid & (iou < 0.5) & (iou >= 0.1)) == main_ref
        assert np.sum(valid & (iou < 0.1)) == len(bg_ref) - main_ref
        assert len(set(out["index"][b][valid])) == int(valid.sum())  # no repeats


def test_roi_sampling_is_uniform_within_each_range():
    """Over many images every candidate of a range is drawn at the same rate, the released
    ``npr.choice(replace=False)`` rate ``picked / available``."""
    ious = np.concatenate([np.linspace(0.55, 0.95, 40), np.linspace(0.12, 0.45, 80)])
    batch = 600
    out = _sampling_case(ious.astype(np.float32), batch, seed=7)
    picked = np.zeros(len(ious) + 1)
    for b in range(batch):
        np.add.at(picked, out["index"][b][out["valid"][b]], 1)
    rate = picked[: len(ious)] / batch
    # 19 fg slots among 40 + 1 GT candidates; 45 bg slots: round(0.85·45) = 38 among 80.
    np.testing.assert_allclose(rate[:40].mean(), 19 / 41, atol=0.01)
    np.testing.assert_allclose(rate[40:].mean(), 38 / 80, atol=0.01)
    assert np.abs(rate[:40] - 19 / 41).max() < 0.09  # ~4.5 binomial sd at n = 600
    assert np.abs(rate[40:] - 38 / 80).max() < 0.09


# ---------------------------------------------------------------- stage bridge


def test_stage_bridge_matches_released():
    """Decode with the highest-scoring object class, clip, relabel at box IoU 0.5.

    The released decode uses ``+ 1`` widths: a box ``[x1, x2]`` (inclusive) decodes to
    ``x1' = c' - w'/2, x2' = c' + w'/2`` as inclusive pixels; ours decodes the same centre and
    size to the edges ``[x1', x2')``. So with the same deltas the coordinates are equal
    except where clipping differs (``W - 1`` there, ``W`` here); box IoUs differ by the
    one-pixel size convention only."""
    rng = np.random.default_rng(3)
    n, r, size = 3, 40, (60, 80)
    gt_ref = []
    for _ in range(4):
        x1, y1 = rng.integers(0, 50), rng.integers(0, 30)
        gt_ref.append([x1, y1, x1 + rng.integers(10, 30), y1 + rng.integers(10, 30)])
    gt_ref = np.array(gt_ref, float)
    rois_ref = gt_ref[rng.integers(0, 4, r)] + rng.integers(-5, 6, (r, 4))
    rois_ref[:, 2:] = np.maximum(rois_ref[:, 2:], rois_ref[:, :2] + 2)
    deltas_ref = rng.normal(scale=0.1, size=(r, 4 * (n + 1)))
    scores = rng.uniform(size=(r, n + 1))
    new_ref, fg_ref, _ = ref.stage_bridge_train(rois_ref, deltas_ref, scores, gt_ref, size)

    cfg = MNCConfig()
    cascade = Cascade(cascade_stages(5), None, cfg, n)
    rois = np.stack([ref.to_ours(b) for b in rois_ref])
    # Our deltas: (dy, dx, dh, dw) per class, times box_regression_weights.
    d = deltas_ref.reshape(r, n + 1, 4)[..., [1, 0, 3, 2]] * np.array(
        cfg.heads.box_regression_weights
    )
    pred = np.argmax(scores[:, 1:], axis=1) + 1
    new = cascade._refine(
        rois[None].astype(np.float32),
        d[None].astype(np.float32),
        pred[None].astype(np.int32),
        np.ones((1, r), bool),
        np.array([size], np.float32),
    ).numpy()[0]
    ref_yx = new_ref[:, [1, 0, 3, 2]]
    np.testing.assert_allclose(new[:, :2], ref_yx[:, :2], atol=1e-3)  # clipped at 0 alike
    unclipped = (new[:, 2] < size[0] - 1) & (new[:, 3] < size[1] - 1)
    np.testing.assert_allclose(new[unclipped, 2:], ref_yx[unclipped, 2:], atol=1e-3)
    assert np.all(np.abs(new[:, 2:] - ref_yx[:, 2:]) <= 1.0 + 1e-3)
    # The relabelling rule: our matcher on the released boxes (converted) gives its labels.
    gt_ours = np.stack([ref.to_ours(b) for b in gt_ref])
    new_ref_ours = np.stack([ref.to_ours(b) for b in new_ref])
    labels = label_rois(
        new_ref_ours[None],
        np.ones((1, r), bool),
        gt_ours[None],
        np.array([[1, 2, 3, 1]], np.int32),
        np.ones((1, 4), bool),
        cfg.roi_sampling.fg_iou,
    )
    overlaps = ref.bbox_overlaps(new_ref, gt_ref)
    np.testing.assert_allclose(labels["max_iou"][0], overlaps.max(1), atol=1e-5)
    np.testing.assert_array_equal(labels["fg"][0], fg_ref)
    np.testing.assert_array_equal(
        labels["labels"][0], np.where(fg_ref, np.array([1, 2, 3, 1])[overlaps.argmax(1)], 0)
    )
    assert 0 < fg_ref.sum() < r


# ---------------------------------------------------------------- mask voting


def test_mask_voting_reboxes_like_released_gpu_voting():
    rng = np.random.default_rng(5)
    h, w, m, n = 56, 64, 14, 2
    objects = [(8, 10, 30, 36), (20, 30, 50, 60)]  # x1, y1, x2, y2 inclusive
    boxes_ref, masks = [], []
    for k in range(12):
        x1, y1, x2, y2 = objects[k % 2]
        jit = rng.integers(-3, 4, 4)
        boxes_ref.append(
            [
                max(x1 + jit[0], 0),
                max(y1 + jit[1], 0),
                min(x2 + jit[2], w - 1),
                min(y2 + jit[3], h - 1),
            ]
        )
        masks.append(
            _ellipse(m, m, m / 2, m / 2, m * 0.45, m * 0.45).astype(np.float32)
            * rng.uniform(0.6, 1.0)
        )
    boxes_ref = np.array(boxes_ref, float)
    masks = np.stack(masks).astype(np.float32)
    probs = rng.uniform(0.05, 1.0, (12, n + 1)).astype(np.float32)
    kept = [0, 1, 4]
    kept_cls = np.array([1, 2, 1])
    v_ref, tight_ref, img_ref = ref.mask_voting(
        boxes_ref, masks, probs, boxes_ref[kept], kept_cls, h, w
    )
    boxes = np.stack([ref.to_ours(b) for b in boxes_ref])
    cfg = MNCConfig(mask_size=m, mask_voting_max_candidates=12)
    v_ours, tight = vote_masks(
        boxes[kept][None],
        kept_cls[None].astype(np.int32),
        masks[kept][None],
        boxes[None],
        masks[None],
        probs[None],
        np.ones((1, 12), bool),
        cfg.postprocess,
    )
    tight = tight.numpy()[0]
    for k in range(len(kept)):
        # Tight boxes agree within the two implementations' sampling offsets (≤ 2 px).
        np.testing.assert_allclose(tight[k], ref.to_ours(tight_ref[k]), atol=2.0)
        ours_img = paste_masks(v_ours[0, k : k + 1], tight[k : k + 1], (h, w), 0.4).numpy()[0]
        ref_img = img_ref[k] > 0.4
        inter = np.sum(ours_img & ref_img)
        assert inter / np.sum(ours_img | ref_img) > 0.9


def test_mask_voting_is_not_cut_at_the_kept_box():
    """Two equally weighted full masks, the second box 4 px wider: the voted mask (0.5 in
    the extra columns, above 0.4) reaches past the kept box, and the box follows it."""
    boxes = np.array([[10, 10, 30, 30], [10, 10, 30, 34]], np.float32)
    masks = np.ones((2, 8, 8), np.float32)
    probs = np.array([[0.5, 0.5], [0.5, 0.5]], np.float32)
    cfg = MNCConfig(mask_size=8)
    args = (boxes[:1][None], np.array([[1]], np.int32), masks[:1][None], boxes[None])
    rest = (masks[None], probs[None], np.ones((1, 2), bool))
    voted, new_box = vote_masks(*args, *rest, cfg.postprocess)
    np.testing.assert_allclose(new_box[0, 0], [10, 10, 30, 34], atol=1e-4)
    pasted = paste_masks(voted[0], new_box[0], (40, 40), 0.4).numpy()[0]
    assert pasted[10:30, 10:34].all() and pasted.sum() == 20 * 24
    # The released voting on the same input (inclusive boxes) gives the same box.
    _, tight_ref, _ = ref.mask_voting(
        np.array([[10, 10, 29, 29], [10, 10, 33, 29]], float),
        masks,
        probs,
        np.array([[10, 10, 29, 29]], float),
        [1],
        40,
        40,
    )
    np.testing.assert_array_equal(tight_ref[0], [10, 10, 33, 29])
    # Without re-boxing the voted mask is cut at the kept box.
    voted_old, box_old = vote_masks(*args, *rest, cfg.replace(mask_voting_rebox=False).postprocess)
    np.testing.assert_array_equal(box_old[0, 0], boxes[0])
