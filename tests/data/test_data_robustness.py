"""Every kind of bad record planted in one generated dataset: the epoch completes and every
problem is counted under the right reason."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from mnc_tf.data import coco_dataset, make_shapes_dataset

SIZE = 64
MAX_INSTANCES = 5


def _ann(ann_id, image_id, category_id=1, bbox=(10.0, 10.0, 20.0, 20.0), **extra):
    x, y, w, h = bbox
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        "bbox": list(bbox),
        "iscrowd": 0,
        "area": w * h,
    }
    ann.update(extra)
    return ann


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    shapes = make_shapes_dataset(root, 12, seed=1, image_size=SIZE, min_shapes=1, max_shapes=1)
    with open(shapes.annotation_file) as f:
        data = json.load(f)
    img_dir = shapes.image_dir

    def path(i):
        return os.path.join(img_dir, data["images"][i - 1]["file_name"])

    rgb = np.asarray(Image.open(path(3)))
    os.remove(path(1))  # image 1: missing file
    with open(path(2), "wb") as f:  # image 2: garbage bytes
        f.write(b"this is not a jpeg" * 20)
    Image.fromarray(rgb).convert("L").save(path(3), "JPEG")  # image 3: grayscale
    Image.fromarray(rgb).convert("CMYK").save(path(4), "JPEG")  # image 4: CMYK
    data["images"][4]["file_name"] = "rgba.png"  # image 5: RGBA PNG
    Image.fromarray(rgb).convert("RGBA").save(os.path.join(img_dir, "rgba.png"))
    Image.fromarray(rgb).resize((SIZE + 8, SIZE)).save(path(6), "JPEG")  # 6: size mismatch
    with open(path(7), "wb") as f:  # image 7: empty file
        pass
    # image 8: all its annotations are removed -> empty image
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 8]
    next_id = 1000
    bad = [
        _ann(1, 9, bbox=(10.0, 10.0, 0.0, 12.0)),  # zero_area_box
        _ann(2, 9, bbox=(SIZE - 10.0, 5.0, 30.0, 20.0)),  # box_clipped (kept)
        _ann(3, 9, bbox=(SIZE + 5.0, 5.0, 10.0, 10.0)),  # box_outside_image
        _ann(4, 9, segmentation=[[1.0, 1.0, 5.0, 5.0]]),  # invalid_polygon
        _ann(5, 9, segmentation=[[1.0, 1.0], [10.0, 10.0, 30.0, 10.0, 30.0, 30.0]]),  # fixed
        _ann(6, 9, category_id=99),  # unknown_category
        _ann(7, 9, segmentation=None),  # missing_segmentation
        _ann(8, 9, iscrowd=1),  # crowd
        _ann(9, 4242),  # unknown_image
        _ann(
            10,
            9,
            segmentation={"size": [SIZE, SIZE], "counts": [SIZE * SIZE]},  # empty_mask
        ),
    ]
    # image 10: 1 shape + 5 extra instances > MAX_INSTANCES -> over_max_instances
    extra = [_ann(next_id + k, 10, bbox=(2.0 + 5 * k, 2.0, 8.0, 8.0)) for k in range(5)]
    data["annotations"] += [dict(a, id=a["id"] + 500) for a in bad] + extra
    with open(shapes.annotation_file, "w") as f:
        json.dump(data, f)
    return shapes, rgb  # rgb: the picture behind images 3, 4 and 5


EXPECTED_SKIPPED = {
    "missing_image": 1,
    "corrupt_image": 2,
    "size_mismatch": 1,
    "zero_area_box": 1,
    "box_outside_image": 1,
    "invalid_polygon": 1,
    "unknown_category": 1,
    "missing_segmentation": 1,
    "crowd": 1,
    "unknown_image": 1,
    "empty_mask": 1,
    "over_max_instances": 1,  # image 10: its 1 shape + 5 extra = 6 instances, 5 kept
}
EXPECTED_FIXED = {
    "box_clipped": 1,
    "polygon_dropped": 1,
    "converted_grayscale": 1,
    "converted_cmyk": 1,
    "converted_rgba": 1,
}


def _run(ds, epochs=1):
    ids = []
    for _ in range(epochs):
        for features, targets in ds:
            ids += features["image_id"].numpy().tolist()
            assert targets["masks"].shape[1:] == (MAX_INSTANCES, SIZE, SIZE)
    return ids


def test_eval_pipeline_completes_and_counts_every_bad_record(planted, caplog):
    planted, _ = planted
    ds = coco_dataset(
        planted.annotation_file, planted.image_dir, short_side=SIZE, max_side=SIZE,
        max_instances=MAX_INSTANCES, batch_size=4,
    )  # fmt: skip
    assert "missing_image" in caplog.text  # logged, not silent
    ids = _run(ds, epochs=2)  # counts must not double over epochs
    # images 1 (missing), 2 and 7 (corrupt), 6 (size mismatch) are gone; 8 (empty) is kept
    expected_ids = [3, 4, 5, 8, 9, 10, 11, 12]
    assert ids == expected_ids * 2
    assert ds.info.skipped == EXPECTED_SKIPPED
    assert ds.info.fixed == EXPECTED_FIXED
    assert ds.info.num_images == 11  # missing file removed up front, others found lazily
    report = ds.info.report()
    assert "corrupt_image=2" in report and "box_clipped=1" in report


def test_converted_images_hold_the_same_picture(planted):
    planted, rgb = planted
    ds = coco_dataset(
        planted.annotation_file, planted.image_dir, short_side=SIZE, max_side=SIZE,
        max_instances=MAX_INSTANCES, image_ids=[3, 4, 5],
    )  # fmt: skip
    images = {int(f["image_id"][0]): f["images"][0].numpy().astype(np.float32) for f, _ in ds}
    gray = images[3]
    assert np.array_equal(gray[..., 0], gray[..., 1])  # replicated channel
    # RGBA PNG is lossless: the alpha channel is dropped and the RGB values kept exactly
    np.testing.assert_array_equal(images[5], rgb)
    # CMYK→RGB by the decoder stays close to the source picture (JPEG loss aside)
    assert np.abs(images[4] - images[5]).mean() < 20


def test_training_pipeline_drops_empty_and_verify_images_counts_up_front(planted):
    planted, _ = planted
    ds = coco_dataset(
        planted.annotation_file, planted.image_dir, short_side=SIZE, max_side=SIZE,
        max_instances=MAX_INSTANCES, batch_size=2, training=True, seed=0, verify_images=True,
    )  # fmt: skip
    # verify_images decoded everything before the first element
    assert ds.info.skipped["corrupt_image"] == 2
    assert ds.info.skipped["size_mismatch"] == 1
    assert ds.info.skipped["empty_image"] == 1  # image 8
    assert ds.info.num_images == 7
    ids = _run(ds)
    # 7 usable images (empty image 8 dropped), shuffled, batch 2, remainder dropped
    assert len(ids) == 6 and set(ids) < {3, 4, 5, 9, 10, 11, 12}
