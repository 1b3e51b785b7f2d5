"""SBD (.mat, written here with scipy.io.savemat) and VOC 2012 PNG layouts."""

import json
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mnc_tf.data import VOC_CLASSES, cached_sbd_to_coco, sbd_dataset, sbd_to_coco

H, W = 40, 56


def _instance_map(seed):
    """Instance map with 0 background, instances 1..3 and (for VOC) a 255 void border."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((H, W), np.uint8)
    for k in (1, 2, 3):
        y, x = rng.integers(0, H - 12), rng.integers(0, W - 14)
        seg[y : y + 12, x : x + 14] = k  # later instances overwrite earlier ones
    return seg


def _write_jpeg(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def sbd_root(tmp_path):
    root = tmp_path / "sbd"
    for sub in ("img", "inst", "cls"):
        (root / sub).mkdir(parents=True)
    names = ["2008_000002", "2008_000003", "2009_000011"]
    truth = {}
    for i, name in enumerate(names):
        seg = _instance_map(i)
        classes = np.array([15, 12, 3])  # person, horse, bird
        present = [k for k in (1, 2, 3) if (seg == k).any()]
        categories = classes[: 3 if i != 1 else 2]  # image 1: instance 3 has no category
        class_map = np.zeros_like(seg)
        for k in (1, 2, 3):
            class_map[seg == k] = classes[k - 1]
        scipy.io.savemat(
            root / "inst" / f"{name}.mat",
            {
                "GTinst": {
                    "Segmentation": seg,
                    "Categories": categories.reshape(-1, 1).astype(np.uint8),
                    "Boundaries": np.zeros((len(categories), 1), object),
                }
            },
        )
        scipy.io.savemat(
            root / "cls" / f"{name}.mat",
            {"GTcls": {"Segmentation": class_map, "CategoriesPresent": np.unique(classes)}},
        )
        _write_jpeg(root / "img" / f"{name}.jpg", i)
        truth[int(name.replace("_", ""))] = [(seg == k, classes[k - 1]) for k in present]
    (root / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (root / "val.txt").write_text(names[2] + "\nmissing_000000\n")
    return root, truth


def _collect(ds):
    out = {}
    for features, targets in ds:
        for b in range(len(features["image_id"])):
            n = int((targets["labels"][b] > 0).numpy().sum())
            out[int(features["image_id"][b])] = (
                targets["masks"][b, :n, :H, :W].numpy().astype(bool),
                targets["labels"][b, :n].numpy(),
            )
    return out


def _check(got, truth):
    assert sorted(got) == sorted(truth)
    for image_id, instances in truth.items():
        masks, labels = got[image_id]
        assert len(masks) == len(instances)
        for (mask, cls), m, lab in zip(instances, masks, labels, strict=True):
            np.testing.assert_array_equal(m, mask)
            assert lab == cls  # VOC labels are the class indices 1..20


def test_sbd_mat_layout(sbd_root):
    root, truth = sbd_root
    ds = sbd_dataset(root, "train", short_side=H, max_side=100, max_instances=4)
    assert ds.info.class_names == list(VOC_CLASSES) and ds.info.num_classes == 20
    _check(_collect(ds), {k: v for k, v in truth.items() if k in (2008000002, 2008000003)})
    # the val list names a file that does not exist: counted, the rest loads
    val = sbd_dataset(root, "val", short_side=H, max_side=100, max_instances=4)
    assert val.info.skipped == {"missing_annotation": 1}
    _check(_collect(val), {2009000011: truth[2009000011]})


def test_sbd_annotation_cache_is_reused(sbd_root, tmp_path):
    root, truth = sbd_root
    cache = tmp_path / "train.json"
    first = _collect(sbd_dataset(root, "train", annotation_cache=cache, short_side=H))
    assert cache.exists()
    os.remove(root / "inst" / "2008_000002.mat")  # a reused cache no longer needs the .mat
    second = _collect(sbd_dataset(root, "train", annotation_cache=cache, short_side=H))
    for k in first:
        np.testing.assert_array_equal(first[k][0], second[k][0])


def test_one_cache_writer_and_old_cache_schemas_are_read(sbd_root, tmp_path):
    root, _ = sbd_root
    expected = sbd_to_coco(root, "val")
    cache = tmp_path / "val.json"
    assert cached_sbd_to_coco(root, "val", "sbd", cache) == expected
    with open(cache) as f:
        assert json.load(f) == dict(zip(("coco", "image_dir", "skipped"), expected, strict=True))
    assert cached_sbd_to_coco(root, "val", "auto", cache) == expected  # read, not converted
    # caches written before there was one writer: {coco, skipped} and {coco, image_dir}
    old = tmp_path / "old.json"
    with open(old, "w") as f:
        json.dump({"coco": expected[0], "image_dir": "elsewhere"}, f)
    assert cached_sbd_to_coco(root, "val", "sbd", old) == (expected[0], expected[1], {})


def test_voc_png_layout(tmp_path):
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    palette = list(np.random.default_rng(0).integers(0, 256, 768))
    seg = _instance_map(5)
    classes = {1: 7, 2: 20, 3: 9}
    class_map = np.zeros_like(seg)
    for k, c in classes.items():
        class_map[seg == k] = c
    # VOC draws a void (255) border around objects in both maps
    border = np.zeros_like(seg, bool)
    border[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    seg_void, cls_void = seg.copy(), class_map.copy()
    seg_void[border] = 255
    cls_void[border] = 255
    for name, arr in (("SegmentationObject", seg_void), ("SegmentationClass", cls_void)):
        im = Image.fromarray(arr, mode="P")
        im.putpalette(palette)
        im.save(root / name / "2007_000032.png")
    _write_jpeg(root / "JPEGImages" / "2007_000032.jpg", 0)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    ds = sbd_dataset(root, "val", short_side=H, max_side=100, max_instances=4)
    present = [k for k in (1, 2, 3) if (seg_void == k).any()]
    truth = {2007000032: [(seg_void == k, classes[k]) for k in present]}
    _check(_collect(ds), truth)


def test_bad_roots(tmp_path):
    with pytest.raises(ValueError, match="root"):
        sbd_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="inst/"):
        sbd_dataset(tmp_path)
    (tmp_path / "inst").mkdir()
    with pytest.raises(ValueError, match="split 'train'"):
        sbd_dataset(tmp_path, "train")
