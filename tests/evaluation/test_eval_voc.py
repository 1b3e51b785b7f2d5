"""VOCEvaluator (mAP^r): hand-built cases and an independent NumPy implementation."""

import numpy as np
import pytest
from eval_testutil import detections, make_gt, rect_mask

from mnc_tf.evaluation import VOCEvaluator

A = (5, 5, 20, 20)
B = (10, 25, 30, 45)


def _update(ev, gt_rows, det_rows, ignore=None):
    gt = detections([(lab, box, 1.0) for lab, box in gt_rows])
    det = detections(det_rows)
    ev.update(gt["masks"], gt["classes"], det["masks"], det["classes"], det["scores"], ignore)


def test_perfect_predictions_score_one():
    ev = VOCEvaluator(2, class_names=["x", "y"])
    _update(ev, [(1, A), (2, B)], [(1, A, 0.9), (2, B, 0.3)])
    m = ev.evaluate()
    for key in ("mAP_r@0.5", "mAP_r@0.7", "mAP_r_auc@0.5", "mAP_r_auc@0.7"):
        assert m[key] == pytest.approx(1.0)
    assert m["AP_r@0.5/x"] == m["AP_r@0.7/y"] == pytest.approx(1.0)


def test_duplicate_gives_the_known_lower_ap():
    ev = VOCEvaluator(1)
    _update(ev, [(1, A)], [(1, A, 0.9), (1, A, 0.8)])  # image 1: hit and duplicate
    _update(ev, [(1, B)], [(1, B, 0.7)])  # image 2: hit
    m = ev.evaluate()
    # recall .5 .5 1, precision 1 .5 2/3: 11-point -> 6 points at 1, 5 at 2/3
    assert m["mAP_r@0.5"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    # area under the envelope: .5 * 1 + .5 * 2/3
    assert m["mAP_r_auc@0.5"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_prediction_below_the_threshold_is_a_miss():
    ev = VOCEvaluator(1)
    _update(ev, [(1, A)], [(1, (5, 8, 20, 23), 0.9)])  # mask IoU 0.667
    m = ev.evaluate()
    assert m["mAP_r@0.5"] == pytest.approx(1.0)
    assert m["mAP_r@0.7"] == 0.0


def test_empty_predictions_score_zero():
    ev = VOCEvaluator(2)
    _update(ev, [(1, A), (2, B)], [])
    assert ev.evaluate() == {
        "mAP_r@0.5": 0.0, "mAP_r_auc@0.5": 0.0, "mAP_r@0.7": 0.0, "mAP_r_auc@0.7": 0.0,
    }  # fmt: skip
    assert VOCEvaluator(2).evaluate()["mAP_r@0.5"] == 0.0  # nothing seen at all


def test_ignored_instances_and_classes_without_ground_truth():
    ev = VOCEvaluator(3)
    crowd = (25, 0, 40, 20)
    # a detection on an ignored (crowd) instance is neither TP nor FP; class 3 has no GT,
    # so its detections do not enter the mean
    _update(
        ev,
        [(1, A), (1, crowd)],
        [(1, crowd, 0.95), (1, A, 0.5), (3, B, 0.99)],
        ignore=[False, True],
    )
    m = ev.evaluate()
    assert m["mAP_r@0.5"] == pytest.approx(1.0)
    ap = ev.class_ap(0.5)
    assert np.isnan(ap[3]) and np.isnan(ap[2]) and ap[1] == pytest.approx(1.0)


def test_devkit_rule_best_match_taken_means_false_positive():
    # two GT instances of one class overlapping; the second detection's best match is the
    # instance already taken, so it is a FP even though it overlaps the other >= 0.5
    g1, g2 = (0, 0, 20, 20), (0, 4, 20, 24)
    d2 = (0, 1, 20, 21)  # IoU with g1 = 19/21, with g2 = 17/23
    ev = VOCEvaluator(1)
    _update(ev, [(1, g1), (1, g2)], [(1, g1, 0.9), (1, d2, 0.8)])
    # TP, FP: recall .5 .5; precision 1 .5 -> 11-point: 6 points at 1
    assert ev.evaluate()["mAP_r@0.5"] == pytest.approx(6 / 11)


def test_add_image_reads_coco_ground_truth():
    gt = make_gt([(1, 1, A, False), (2, 2, B, False), (2, 1, (0, 0, 8, 8), True)])
    ev = VOCEvaluator(2, ground_truth=gt)
    ev.add_image(1, detections([(1, A, 0.9)]))
    ev.add_image(2, detections([(2, B, 0.9), (1, (0, 0, 8, 8), 0.99)]))  # on the crowd
    assert ev.evaluate()["mAP_r@0.7"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ground_truth"):
        VOCEvaluator(2).add_image(1, detections([]))


def test_bad_input_raises_value_errors():
    ev = VOCEvaluator(2)
    m = rect_mask(*A)[None]
    with pytest.raises(ValueError, match="pred_masks size"):
        ev.update(m, [1], np.zeros((1, 10, 10)), [1], [0.5])
    with pytest.raises(ValueError, match="gt_labels"):
        ev.update(m, [3], m, [1], [0.5])
    with pytest.raises(ValueError, match="pred_masks must be"):
        ev.update(m, [1], m, [1, 1], [0.5])
    with pytest.raises(ValueError, match="num_classes"):
        VOCEvaluator(0)


# ----------------------------------------------------------------------------------------
# Independent reference: loops and dense NumPy IoU, VOC devkit semantics.
# ----------------------------------------------------------------------------------------


def _reference(images, num_classes, thr, use_07):
    aps = []
    for c in range(1, num_classes + 1):
        dets, npos, used = [], 0, {}
        for i, img in enumerate(images):
            npos += sum(
                1 for lab, ign in zip(img["gl"], img["gi"], strict=True) if lab == c and not ign
            )
            used[i] = [False] * len(img["gl"])
            for k in range(len(img["pl"])):
                if img["pl"][k] == c:
                    dets.append((img["ps"][k], i, img["pm"][k]))
        if npos == 0:
            continue
        dets.sort(key=lambda d: -d[0])  # stable, like the evaluator
        tp, fp = [], []
        for _, i, mask in dets:
            img = images[i]
            best, best_j = -1.0, -1
            for j in range(len(img["gl"])):
                if img["gl"][j] != c:
                    continue
                inter = np.logical_and(mask, img["gm"][j]).sum()
                union = np.logical_or(mask, img["gm"][j]).sum()
                iou = inter / union if union else 0.0
                if iou > best:
                    best, best_j = iou, j
            if best >= thr:
                if img["gi"][best_j]:
                    continue
                if not used[i][best_j]:
                    used[i][best_j] = True
                    tp.append(1)
                    fp.append(0)
                else:
                    tp.append(0)
                    fp.append(1)
            else:
                tp.append(0)
                fp.append(1)
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        rec = tp_c / npos
        prec = tp_c / np.maximum(tp_c + fp_c, 1e-12)
        if use_07:
            ap = 0.0
            for t in np.arange(0.0, 1.1, 0.1):
                p = prec[rec >= t - 1e-12].max() if (rec >= t - 1e-12).any() else 0.0
                ap += p / 11
        else:
            r = [0.0, *rec, 1.0]
            p = [0.0, *prec, 0.0]
            for k in range(len(p) - 2, -1, -1):
                p[k] = max(p[k], p[k + 1])
            ap = sum((r[k + 1] - r[k]) * p[k + 1] for k in range(len(r) - 1))
        aps.append(ap)
    return float(np.mean(aps)) if aps else 0.0


def _random_image(rng, num_classes, size=32):
    def rand_mask():
        y1, x1 = rng.integers(0, size - 6, 2)
        h, w = rng.integers(4, size // 2, 2)
        return rect_mask(y1, x1, min(y1 + h, size), min(x1 + w, size), size, size).astype(bool)

    g = int(rng.integers(0, 4))
    gm = [rand_mask() for _ in range(g)]
    gl = rng.integers(1, num_classes + 1, g).tolist()
    gi = (rng.random(g) < 0.15).tolist()
    pm, pl = [], []
    for j in range(g):  # noisy copies (some duplicated) of the truth
        for _ in range(int(rng.integers(0, 3))):
            m = np.roll(gm[j], tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
            pm.append(m)
            pl.append(gl[j] if rng.random() < 0.85 else int(rng.integers(1, num_classes + 1)))
    for _ in range(int(rng.integers(0, 3))):  # clutter
        pm.append(rand_mask())
        pl.append(int(rng.integers(1, num_classes + 1)))
    ps = rng.random(len(pm)).tolist()
    return {"gm": gm, "gl": gl, "gi": gi, "pm": pm, "pl": pl, "ps": ps}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_an_independent_numpy_implementation(seed):
    rng = np.random.default_rng(seed)
    num_classes = 3
    images = [_random_image(rng, num_classes) for _ in range(12)]
    ev = VOCEvaluator(num_classes, iou_thresholds=(0.5, 0.7))
    for img in images:
        zeros = np.zeros((0, 32, 32), bool)
        ev.update(
            np.stack(img["gm"]) if img["gm"] else zeros,
            img["gl"],
            np.stack(img["pm"]) if img["pm"] else zeros,
            img["pl"],
            img["ps"],
            gt_ignore=img["gi"],
        )
    m = ev.evaluate()
    for thr in (0.5, 0.7):
        assert m[f"mAP_r@{thr:g}"] == pytest.approx(_reference(images, num_classes, thr, True))
        assert m[f"mAP_r_auc@{thr:g}"] == pytest.approx(_reference(images, num_classes, thr, False))
    assert 0.0 < m["mAP_r@0.5"] < 1.0  # the random case is not trivial
