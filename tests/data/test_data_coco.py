"""COCO loader: masks vs pycocotools annToMask, label mapping, padding, determinism, sharding."""

import cv2
import numpy as np
import pytest
import tensorflow as tf
from data_testutil import handmade_coco
from pycocotools.coco import COCO

from mnc_tf.data import coco_dataset, coco_dataset_fn, make_shapes_dataset


def _elements(ds):
    """Unbatched NumPy elements of a dataset."""
    out = []
    for features, targets in ds:
        for b in range(len(features["image_id"])):
            out.append(
                {k: v[b].numpy() for k, v in features.items()}
                | {k: v[b].numpy() for k, v in targets.items()}
            )
    return out


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    return handmade_coco(str(tmp_path_factory.mktemp("handmade")))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 10, seed=3, image_size=64)


def test_masks_boxes_labels_match_pycocotools_at_scale_one(handmade):
    annotation_file, image_dir, pixels = handmade
    # short side 48 = image height and a generous max side: scale exactly 1.
    ds = coco_dataset(annotation_file, image_dir, short_side=48, max_side=200, max_instances=4)
    info = ds.info
    assert info.category_ids == [2, 5] and info.class_names == ["b", "a"]
    assert info.skipped == {"crowd": 1}
    coco = COCO(annotation_file)
    elements = _elements(ds)
    assert [e["image_id"] for e in elements] == [1, 7]
    for e in elements:
        anns = [a for a in coco.imgToAnns[int(e["image_id"])] if not a["iscrowd"]]
        n = len(anns)
        np.testing.assert_array_equal(e["images"][:48, :64], pixels[int(e["image_id"])])
        np.testing.assert_array_equal(e["image_info"], [[48, 64], [48, 64], [1, 1], [0, 0]])
        for k, ann in enumerate(anns):
            np.testing.assert_array_equal(e["masks"][k, :48, :64], coco.annToMask(ann))
            x, y, w, h = ann["bbox"]
            np.testing.assert_allclose(e["boxes"][k], [y, x, min(y + h, 48), min(x + w, 64)])
            assert e["labels"][k] == [2, 5].index(ann["category_id"]) + 1
        # padding conventions
        assert (e["labels"][n:] == -1).all() and (e["boxes"][n:] == -1).all()
        assert not e["masks"][n:].any()
        assert not e["masks"][:, 48:].any() and not e["masks"][:, :, 64:].any()
        assert not e["images"][48:].any() and not e["images"][:, 64:].any()


def test_resized_masks_and_boxes_follow_the_scale(handmade):
    annotation_file, image_dir, _ = handmade
    ds = coco_dataset(annotation_file, image_dir, short_side=96, max_side=1000)
    assert ds.info.image_size == (96, 128)  # 48x64 * 2, already multiples of 32
    coco = COCO(annotation_file)
    for e in _elements(ds):
        np.testing.assert_allclose(e["image_info"], [[48, 64], [96, 128], [2, 2], [0, 0]])
        anns = [a for a in coco.imgToAnns[int(e["image_id"])] if not a["iscrowd"]]
        for k, ann in enumerate(anns):
            # independent reference: OpenCV bilinear (half-pixel centres) then >= 0.5
            ref = cv2.resize(coco.annToMask(ann).astype(np.float32), (128, 96)) >= 0.5
            got = e["masks"][k].astype(bool)
            iou = (got & ref).sum() / (got | ref).sum()
            assert iou > 0.97, iou
            x, y, w, h = ann["bbox"]
            np.testing.assert_allclose(
                e["boxes"][k], np.minimum(np.array([y, x, y + h, x + w]) * 2, [96, 128] * 2)
            )


def test_fixed_shapes_and_dtypes(shapes):
    ds = coco_dataset(
        shapes.annotation_file, shapes.image_dir, batch_size=4, training=True, seed=0,
        short_side=80, max_side=80, max_instances=6, scale_jitter=(0.8, 1.2),
    )  # fmt: skip
    features, targets = ds.element_spec
    assert features["images"].shape == (4, 96, 96, 3)  # 64 * 80/64 * 1.2 = 96
    assert features["images"].dtype == tf.uint8
    assert features["image_info"].shape == (4, 4, 2)
    assert features["image_id"].dtype == tf.int64
    assert targets["boxes"].shape == (4, 6, 4)
    assert targets["labels"].dtype == tf.int32
    assert targets["masks"].shape == (4, 6, 96, 96) and targets["masks"].dtype == tf.uint8
    sizes = set()
    for f, t in ds:
        info = f["image_info"].numpy()
        sizes.update(info[:, 1, 0].tolist())
        assert (info[:, 1] <= 96).all()
        labels = t["labels"].numpy()
        assert set(labels[labels > 0].tolist()) <= {1, 2, 3}
    assert len(sizes) > 1  # the jitter changes the size
    assert ds.info.category_ids == [1, 3, 7]


def test_determinism_for_a_seed(shapes):
    def make(seed):
        return coco_dataset(
            shapes.annotation_file, shapes.image_dir, batch_size=2, training=True, seed=seed,
            short_side=64, max_side=64, max_instances=5, scale_jitter=(0.7, 1.0),
        )  # fmt: skip

    a, b, c = make(5), make(5), make(6)
    ea, eb, ec = _elements(a), _elements(b), _elements(c)
    for x, y in zip(ea, eb, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert [e["image_id"] for e in ea] != [e["image_id"] for e in ec]
    # a second epoch of the same dataset draws new augmentations and a new order
    ea2 = _elements(a)
    assert [e["image_id"] for e in ea2] != [e["image_id"] for e in ea] or any(
        not np.array_equal(x["images"], y["images"]) for x, y in zip(ea, ea2, strict=True)
    )
    eb2 = _elements(b)  # ... reproducibly
    for x, y in zip(ea2, eb2, strict=True):
        np.testing.assert_array_equal(x["images"], y["images"])


@pytest.mark.parametrize("cache", [False, True])  # flipped by the loader / by TF ops
def test_flip_is_consistent_across_image_boxes_and_masks(shapes, cache):
    def make(flip):
        return coco_dataset(
            shapes.annotation_file, shapes.image_dir, training=True, seed=11, shuffle=False,
            flip=flip, short_side=64, max_side=64, max_instances=5, cache=cache,
        )  # fmt: skip

    plain, maybe = _elements(make(False)), _elements(make(True))
    flipped = 0
    for p, m in zip(plain, maybe, strict=True):
        assert p["image_id"] == m["image_id"]
        if np.array_equal(p["images"], m["images"]):
            np.testing.assert_array_equal(p["masks"], m["masks"])
            continue
        flipped += 1
        np.testing.assert_array_equal(m["images"], p["images"][:, ::-1])  # 64 = padded width
        np.testing.assert_array_equal(m["masks"], p["masks"][:, :, ::-1])
        for k in np.flatnonzero(p["labels"] > 0):
            y1, x1, y2, x2 = p["boxes"][k]
            np.testing.assert_allclose(m["boxes"][k], [y1, 64 - x2, y2, 64 - x1])
            # the flipped mask lies in the flipped box, touching its edges (boxes are tight)
            ys, xs = np.nonzero(m["masks"][k])
            np.testing.assert_allclose(
                [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], m["boxes"][k], atol=1
            )
        np.testing.assert_array_equal(m["labels"], p["labels"])
    assert 0 < flipped < len(plain)


def test_drop_empty_image_ids_and_max_instances(shapes):
    coco = COCO(shapes.annotation_file)
    counts = {i: len(coco.imgToAnns[i]) for i in coco.imgs}
    ids = sorted(coco.imgs)[:6]
    ds = coco_dataset(
        shapes.annotation_file, shapes.image_dir, image_ids=ids, short_side=64, max_side=64,
        max_instances=1, batch_size=3,
    )  # fmt: skip
    elements = _elements(ds)
    assert [int(e["image_id"]) for e in elements] == ids
    assert ds.info.skipped.get("over_max_instances", 0) == sum(max(counts[i] - 1, 0) for i in ids)
    for e in elements:
        # the kept instance is the largest box
        anns = coco.imgToAnns[int(e["image_id"])]
        areas = [a["bbox"][2] * a["bbox"][3] for a in anns]
        x, y, w, h = anns[int(np.argmax(areas))]["bbox"]
        np.testing.assert_allclose(e["boxes"][0], [y, x, y + h, x + w])
    with pytest.raises(ValueError, match="image_ids"):
        coco_dataset(shapes.annotation_file, shapes.image_dir, image_ids=[999])


def test_bad_arguments_raise_value_errors(shapes, tmp_path):
    args = (shapes.annotation_file, shapes.image_dir)
    with pytest.raises(ValueError, match="annotation_file"):
        coco_dataset(str(tmp_path / "nope.json"), shapes.image_dir)
    with pytest.raises(ValueError, match="image_dir"):
        coco_dataset(shapes.annotation_file, str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="batch_size"):
        coco_dataset(*args, batch_size=0)
    with pytest.raises(ValueError, match="scale_jitter"):
        coco_dataset(*args, scale_jitter=(1.2, 0.8))
    with pytest.raises(ValueError, match="pad_to"):
        coco_dataset(*args, pad_to=(64,))
    with pytest.raises(ValueError, match="max_instances"):
        coco_dataset(*args, max_instances=0)


def test_input_context_shards_and_uses_per_replica_batch(shapes):
    fn = coco_dataset_fn(
        shapes.annotation_file, shapes.image_dir, global_batch_size=4, short_side=64,
        max_side=64, max_instances=4,
    )  # fmt: skip
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
        )
        ds = fn(ctx)
        for features, _ in ds:
            assert features["images"].shape[0] <= 2  # per-replica batch = 4 / 2
            seen.append(features["image_id"].numpy().tolist())
    flat = sorted(i for batch in seen for i in batch)
    assert flat == list(range(1, 11))  # disjoint shards covering every image
    assert fn.info.num_images == 10


def test_works_with_distribution_strategies(shapes):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    fn = coco_dataset_fn(
        shapes.annotation_file, shapes.image_dir, global_batch_size=2, training=True, seed=0,
        short_side=64, max_side=64, max_instances=4,
    )  # fmt: skip
    dist = strategy.distribute_datasets_from_function(fn)
    features, targets = next(iter(dist))
    assert features["images"].shape == (2, 64, 64, 3)
    ds = coco_dataset(
        shapes.annotation_file, shapes.image_dir, batch_size=2, training=True, seed=0,
        short_side=64, max_side=64, max_instances=4,
    )  # fmt: skip
    features, targets = next(iter(strategy.experimental_distribute_dataset(ds)))
    assert targets["masks"].shape == (2, 4, 64, 64)


def test_memory_cache_gives_the_same_elements(shapes):
    kwargs = dict(short_side=64, max_side=64, max_instances=5, batch_size=5)
    plain = _elements(coco_dataset(shapes.annotation_file, shapes.image_dir, **kwargs))
    cached_ds = coco_dataset(shapes.annotation_file, shapes.image_dir, cache=True, **kwargs)
    for _ in range(2):  # second pass reads from the cache
        for x, y in zip(plain, _elements(cached_ds), strict=True):
            np.testing.assert_array_equal(x["masks"], y["masks"])
            np.testing.assert_array_equal(x["images"], y["images"])


def test_image_dtype_float32_gives_the_same_pixels_and_bad_dtype_is_named(shapes):
    kwargs = dict(batch_size=2, training=True, seed=3, short_side=80, max_side=80)
    as_uint8 = list(coco_dataset(shapes.annotation_file, shapes.image_dir, **kwargs))
    as_float = list(
        coco_dataset(shapes.annotation_file, shapes.image_dir, image_dtype="float32", **kwargs)
    )
    assert len(as_uint8) == len(as_float) == 5
    for (f8, t8), (f32, t32) in zip(as_uint8, as_float, strict=True):
        assert f8["images"].dtype == tf.uint8 and f32["images"].dtype == tf.float32
        np.testing.assert_array_equal(f8["images"].numpy().astype(np.float32), f32["images"])
        np.testing.assert_array_equal(t8["masks"], t32["masks"])
    with pytest.raises(ValueError, match="image_dtype must be uint8, float16, bfloat16 or"):
        coco_dataset(shapes.annotation_file, shapes.image_dir, image_dtype=tf.int32)
