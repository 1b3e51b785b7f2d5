"""COCOEvaluator on hand-built cases with known answers."""

import json
import math

import numpy as np
import pytest
from eval_testutil import CATEGORY_IDS, detections, make_gt, rect_mask
from pycocotools.coco import COCO

from mnc_tf.evaluation import COCOEvaluator

A = (5, 5, 20, 20)  # label-1 rectangle in image 1
B = (10, 25, 30, 45)  # label-2 rectangle in image 2
GT = [(1, 1, A, False), (2, 2, B, False)]
# Two images, one label-1 instance each (for the duplicate case).
GT_SAME = [(1, 1, A, False), (2, 1, B, False)]


def _evaluate(gt, per_image):
    ev = COCOEvaluator(gt)
    for image_id, rows in per_image.items():
        ev.update(image_id, detections(rows))
    return ev, ev.evaluate()


def test_perfect_predictions_score_one():
    _, m = _evaluate(make_gt(GT), {1: [(1, A, 0.9)], 2: [(2, B, 0.8)]})
    for t in ("bbox", "segm"):
        assert m[f"{t}/AP"] == pytest.approx(1.0)
        assert m[f"{t}/AP50"] == m[f"{t}/AP75"] == pytest.approx(1.0)
        assert m[f"{t}/AR100"] == pytest.approx(1.0)
        assert m[f"{t}/APs"] == pytest.approx(1.0)  # both objects are small (< 32²)
        assert math.isnan(m[f"{t}/APl"])  # COCO's -1: no large object to score


def test_labels_map_back_to_category_ids():
    # classes swapped: every detection lands on the wrong category
    ev, m = _evaluate(make_gt(GT), {1: [(2, A, 0.9)], 2: [(1, B, 0.8)]})
    assert m["segm/AP"] == 0.0
    assert [r["category_id"] for r in ev._results] == [CATEGORY_IDS[1], CATEGORY_IDS[0]]


def test_duplicate_gives_the_known_lower_ap():
    # sorted: TP (img 1), duplicate FP (img 1), TP (img 2): recall .5 .5 1, precision 1 .5 2/3;
    # COCO's 101-point interpolation: 51 recall points at precision 1, 50 at 2/3.
    rows = {1: [(1, A, 0.9), (1, A, 0.8)], 2: [(1, B, 0.7)]}
    _, m = _evaluate(make_gt(GT_SAME), rows)
    expected = (51 + 50 * 2 / 3) / 101
    assert m["bbox/AP"] == pytest.approx(expected, abs=1e-6)
    assert m["segm/AP"] == pytest.approx(expected, abs=1e-6)
    # the same detections with the duplicate scored lowest lose nothing
    rows = {1: [(1, A, 0.9), (1, A, 0.1)], 2: [(1, B, 0.7)]}
    assert _evaluate(make_gt(GT_SAME), rows)[1]["segm/AP"] == pytest.approx(1.0)


def test_prediction_below_the_iou_threshold_is_a_miss():
    shifted = (5, 8, 20, 23)  # A shifted by 3 px: IoU = 180 / 270 = 0.667
    _, m = _evaluate(make_gt(GT[:1], num_images=1), {1: [(1, shifted, 0.9)]})
    for t in ("bbox", "segm"):
        assert m[f"{t}/AP50"] == pytest.approx(1.0)
        assert m[f"{t}/AP75"] == 0.0
        # thresholds .50, .55, .60, .65 of ten are met
        assert m[f"{t}/AP"] == pytest.approx(0.4)


def test_empty_predictions_score_zero():
    _, m = _evaluate(make_gt(GT), {1: [], 2: []})
    assert m["bbox/AP"] == 0.0 and m["segm/AP"] == 0.0 and m["segm/AR100"] == 0.0
    ev = COCOEvaluator(make_gt(GT))
    assert ev.evaluate()["segm/AP"] == 0.0  # nothing at all


def test_detection_on_a_crowd_region_is_ignored():
    crowd = (25, 0, 40, 20)
    rows = {1: [(1, A, 0.5), (1, crowd, 0.9)]}
    _, m = _evaluate(make_gt([(1, 1, A, False), (1, 1, crowd, True)], num_images=1), rows)
    assert m["segm/AP"] == pytest.approx(1.0) and m["bbox/AP"] == pytest.approx(1.0)
    # without the crowd annotation the 0.9 detection is a false positive ranked first
    _, m = _evaluate(make_gt([(1, 1, A, False)], num_images=1), rows)
    assert m["segm/AP"] == pytest.approx(0.5, abs=0.01)


def test_box_relative_masks_are_pasted():
    dets = {
        "boxes": np.array([A], np.float32),
        "scores": np.array([0.9], np.float32),
        "classes": np.array([1]),
        "masks": np.ones((1, 14, 14), np.float32),  # box-relative, fills the box
    }
    ev = COCOEvaluator(make_gt(GT[:1], num_images=1))
    ev.update(1, dets)
    assert ev.evaluate()["segm/AP"] == pytest.approx(1.0)


def test_padding_rows_and_num_detections_are_dropped():
    dets = detections([(1, A, 0.9), (2, B, 0.95), (0, B, 0.99)])
    dets["num_detections"] = 1  # only the first row is real
    ev = COCOEvaluator(make_gt(GT[:1], num_images=1))
    ev.update(1, dets)
    assert len(ev._results) == 1
    assert ev.evaluate()["segm/AP"] == pytest.approx(1.0)


def test_write_results_is_standard_coco_json(tmp_path):
    gt = make_gt(GT)
    ev, m = _evaluate(gt, {1: [(1, A, 0.9)], 2: [(2, B, 0.8)]})
    path = tmp_path / "results.json"
    ev.write_results(path)
    results = json.loads(path.read_text())
    assert results[0]["bbox"] == [5.0, 5.0, 15.0, 15.0]  # x, y, w, h
    assert results[1]["category_id"] == 9
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    dt = coco.loadRes(str(path))
    np.testing.assert_array_equal(dt.annToMask(dt.anns[1]), rect_mask(*A))


def test_ground_truth_with_invalid_polygon_does_not_crash():
    gt = make_gt(GT)
    gt["annotations"].append(
        {"id": 99, "image_id": 2, "category_id": 4, "segmentation": [[1.0, 1.0, 2.0, 2.0]],
         "bbox": [1.0, 1.0, 1.0, 1.0], "iscrowd": 0}
    )  # fmt: skip
    ev, m = _evaluate(gt, {1: [(1, A, 0.9)], 2: [(2, B, 0.8)]})
    assert ev.skipped_gt == 1
    assert m["segm/AP"] == pytest.approx(1.0)


def test_bad_input_raises_value_errors():
    ev = COCOEvaluator(make_gt(GT))
    with pytest.raises(ValueError, match="image_id 77"):
        ev.update(77, detections([]))
    with pytest.raises(ValueError, match="classes"):
        ev.update(1, detections([(3, A, 0.9)]))
    with pytest.raises(ValueError, match="scores"):
        ev.update(1, {"boxes": np.zeros((1, 4)), "classes": [1]})
    with pytest.raises(ValueError, match="category_ids"):
        COCOEvaluator(make_gt(GT), category_ids=[4, 5])
