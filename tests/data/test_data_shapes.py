"""Synthetic shapes dataset: determinism, disjoint splits, exact and consistent masks."""

import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mnc_tf.data import make_shapes_dataset


def _read(shapes):
    with open(shapes.annotation_file) as f:
        data = json.load(f)
    images = {
        img["id"]: cv2.imread(os.path.join(shapes.image_dir, img["file_name"]))[..., ::-1]
        for img in data["images"]
    }
    return data, images


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    return make_shapes_dataset(
        tmp_path_factory.mktemp("sh"), 20, seed=4, image_size=96, split="train", max_shapes=5
    )


def test_deterministic_and_prefix_stable(tmp_path, train):
    again = make_shapes_dataset(tmp_path / "a", 20, seed=4, image_size=96, split="train",
                                max_shapes=5)  # fmt: skip
    shorter = make_shapes_dataset(tmp_path / "b", 5, seed=4, image_size=96, split="train",
                                  max_shapes=5)  # fmt: skip
    data, images = _read(train)
    data2, images2 = _read(again)
    data3, images3 = _read(shorter)
    assert data == data2
    for i in images:
        np.testing.assert_array_equal(images[i], images2[i])
    for i in images3:  # image i depends only on (seed, split, i)
        np.testing.assert_array_equal(images[i], images3[i])
    assert [a for a in data["annotations"] if a["image_id"] <= 5] == data3["annotations"]


def test_splits_hold_different_images(tmp_path, train):
    val = make_shapes_dataset(tmp_path, 20, seed=4, image_size=96, split="val", max_shapes=5)
    assert val.annotation_file != train.annotation_file
    _, train_images = _read(train)
    _, val_images = _read(val)
    for t in train_images.values():
        for v in val_images.values():
            assert np.abs(t.astype(int) - v).mean() > 10


def test_categories_and_annotation_consistency(train):
    coco = COCO(train.annotation_file)
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [
        (1, "circle"), (3, "square"), (7, "triangle"),
    ]  # fmt: skip
    assert train.category_ids == (1, 3, 7)
    occluded = polygons = 0
    for image_id in coco.getImgIds():
        anns = coco.imgToAnns[image_id]
        assert 1 <= len(anns) <= 5
        masks = np.stack([coco.annToMask(a) for a in anns])
        assert masks.sum(axis=0).max() == 1  # visible masks never overlap
        for ann, mask in zip(anns, masks, strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask))
            assert ann["area"] == mask.sum() > 0
            np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(rle))
            assert max(ann["bbox"][2:]) >= 14  # no tiny objects (>= ~16 px across)
            assert max(ann["bbox"][2:]) <= 0.6 * 96 + 1
            if isinstance(ann["segmentation"], list):
                polygons += 1
            else:
                occluded += 1
    assert polygons > 0 and occluded > 0  # both encodings are exercised


def test_masks_match_the_painted_pixels(train):
    coco = COCO(train.annotation_file)
    _, images = _read(train)
    kernel = np.ones((3, 3), np.uint8)
    for image_id in coco.getImgIds():
        image = images[image_id].astype(np.float32)
        anns = coco.imgToAnns[image_id]
        union = np.zeros(image.shape[:2], np.uint8)
        for ann in anns:
            union |= coco.annToMask(ann)
        for ann in anns:
            mask = coco.annToMask(ann)
            core = cv2.erode(mask, kernel).astype(bool)  # away from JPEG edge blur
            if core.sum() < 20:
                continue
            colour = np.median(image[core], axis=0)
            inside = np.abs(image[core] - colour).sum(axis=1) < 60
            assert inside.mean() > 0.95
            # just outside the mask (and outside every other shape): the background, whose
            # colour is far from the shape's
            ring = cv2.dilate(mask, kernel, iterations=3).astype(bool) & ~cv2.dilate(
                union, kernel
            ).astype(bool)
            if ring.sum() >= 20:
                outside = np.abs(image[ring] - colour).sum(axis=1) < 60
                assert outside.mean() < 0.5


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        make_shapes_dataset(tmp_path, 1, num_classes=9)
    with pytest.raises(ValueError, match="max_shapes"):
        make_shapes_dataset(tmp_path, 1, min_shapes=3, max_shapes=2)
    with pytest.raises(ValueError, match="image_size"):
        make_shapes_dataset(tmp_path, 1, image_size=8)
    with pytest.raises(ValueError, match="num_images"):
        make_shapes_dataset(tmp_path, -1)
