"""Small helpers of mnc_tf.export: label maps, version directories, labels.txt, COCO results."""

import types

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mnc_tf.export import coco_results, latest_version_dir, read_labels
from mnc_tf.export.signatures import label_map, model_settings


def test_label_map_defaults_to_contiguous_labels():
    model = types.SimpleNamespace(num_classes=3, class_names=None, category_ids=None)
    assert label_map(model) == ([1, 2, 3], ["class_1", "class_2", "class_3"])
    model = types.SimpleNamespace(class_names=["a", "b"], category_ids=[7, 1])
    assert label_map(model) == ([7, 1], ["a", "b"])
    with pytest.raises(ValueError, match="category_ids"):
        label_map(types.SimpleNamespace(class_names=["a", "b"], category_ids=[7]))
    with pytest.raises(ValueError, match="number of classes"):
        label_map(types.SimpleNamespace())


def test_model_settings_come_from_the_model_config():
    ns = types.SimpleNamespace
    model = ns(
        preprocessing=ns(short_side=64.0, max_side=96),
        config=ns(
            heads=ns(mask_size=14),
            postprocess=ns(mask_threshold=0.3, predict_score_threshold=0.7),
        ),
    )
    assert model_settings(model) == {
        "short_side": 64,
        "max_side": 96,
        "mask_size": 14,
        "mask_threshold": 0.3,
        "score_threshold": 0.7,
    }
    del model.config.postprocess.mask_threshold
    with pytest.raises(ValueError, match=r"expected `mask_threshold` on an MNC model"):
        model_settings(model)
    with pytest.raises(ValueError, match=r"expected `preprocessing`"):
        model_settings(ns(config=model.config))


def test_latest_version_dir(tmp_path):
    for name in ("1", "10", "2", ".staging-11-abc", "notes"):
        (tmp_path / name).mkdir()
    for name in ("1", "10", "2", ".staging-11-abc"):
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    assert latest_version_dir(tmp_path) == str(tmp_path / "10")  # numeric, not lexical
    assert latest_version_dir(tmp_path / "2") == str(tmp_path / "2")
    with pytest.raises(FileNotFoundError, match="not a SavedModel directory"):
        latest_version_dir(tmp_path / "notes")


def test_read_labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("5\ttraffic light\n90\ttoothbrush\n")
    assert read_labels(path) == {5: "traffic light", 90: "toothbrush"}
    path.write_text("traffic light\n")
    with pytest.raises(ValueError, match="labels.txt:1"):
        read_labels(path)


def test_coco_results_boxes_and_rle():
    masks = np.zeros((2, 6, 9), np.uint8)
    masks[0, 1:4, 2:7] = 1
    masks[1, 5, 8] = 1
    boxes = np.array([[1, 2, 4, 7], [5, 8, 6, 9]], np.float32)
    results = coco_results(17, boxes, [0.9, 0.1], np.array([3, 44], np.int32), masks)
    assert [r["bbox"] for r in results] == [[2.0, 1.0, 5.0, 3.0], [8.0, 5.0, 1.0, 1.0]]
    assert [r["category_id"] for r in results] == [3, 44]
    assert all(type(r["category_id"]) is int and r["image_id"] == 17 for r in results)
    for r, m in zip(results, masks, strict=True):
        assert isinstance(r["segmentation"]["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode(r["segmentation"]), m)
        assert mask_utils.area(r["segmentation"]) == m.sum()
    assert len(coco_results(17, boxes, [0.9, 0.1], [3, 44], masks, score_threshold=0.5)) == 1
    with pytest.raises(ValueError, match="masks"):
        coco_results(1, boxes, [0.9, 0.1], [3, 44], masks[:1])
    with pytest.raises(ValueError, match="scores"):
        coco_results(1, boxes, [0.9], [3, 44])
