"""The loader's TF-side work: JPEGs decoded by tf.io.decode_jpeg, masks by the MncDecodeRle
op; references are pycocotools, OpenCV and the loader's NumPy path."""

import io
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mnc_tf.data import coco_dataset, make_shapes_dataset
from mnc_tf.data.coco import CocoSource
from mnc_tf.ops import decode_rle, library_available

pytestmark = pytest.mark.skipif(not library_available(), reason="op library not built")


def _encode(masks):
    return [r["counts"] for r in mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))]


@pytest.mark.parametrize("height,width", [(1, 1), (5, 7), (64, 48), (97, 131)])
def test_decode_rle_equals_pycocotools(height, width):
    rng = np.random.default_rng(height * width)
    masks = (rng.random((5, height, width)) > rng.random((5, 1, 1))).astype(np.uint8)
    masks[1] = 0
    masks[2] = 1
    counts = _encode(masks)
    reference = mask_utils.decode(
        mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    ).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_rle(counts, height, width).numpy(), reference)
    np.testing.assert_array_equal(
        decode_rle(counts, height, width, flip=True).numpy(), reference[:, :, ::-1]
    )


def test_decode_rle_polygons_and_empty_list():
    poly = [[2.0, 3.0, 40.0, 5.0, 30.0, 50.0, 4.0, 33.0]]
    rle = mask_utils.merge(mask_utils.frPyObjects(poly, 60, 45))
    out = decode_rle([rle["counts"]], 60, 45).numpy()
    np.testing.assert_array_equal(out[0], mask_utils.decode(rle))
    assert decode_rle(tf.zeros([0], tf.string), 8, 9).shape == (0, 8, 9)


@pytest.mark.parametrize(
    "counts,message",
    [
        (b"1:", r"mask 0: RLE runs cover 11 pixels, not 5x5 = 25"),
        (b"P", r"mask 0: truncated RLE string"),
        (b"\x01\x02", r"mask 0: invalid character in RLE string"),
    ],
)
def test_decode_rle_bad_strings_name_the_mask(counts, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        decode_rle([counts], 5, 5)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("native"), 6, seed=4, image_size=96)


def test_jpegs_decode_like_tf_decode_jpeg_and_close_to_opencv(shapes):
    # The loader decodes JPEGs with tf.io.decode_jpeg's defaults, as the exported serving
    # signature does (tf.io.decode_image): bit-equal to it. OpenCV uses the slower
    # accurate IDCT; the two differ by a few levels at most (measured: max 5-9, mean 1.0).
    coco = COCO(shapes.annotation_file)
    ds = coco_dataset(shapes.annotation_file, shapes.image_dir, short_side=96, max_side=96)
    for features, _ in ds:
        image_id = int(features["image_id"][0])
        path = os.path.join(shapes.image_dir, coco.imgs[image_id]["file_name"])
        ours = features["images"][0, :96, :96].numpy()
        with open(path, "rb") as f:
            expected = tf.io.decode_jpeg(f.read(), channels=3).numpy().astype(np.float32)
        np.testing.assert_array_equal(ours, expected)
        opencv = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB).astype(np.float32)
        assert np.abs(ours - opencv).max() <= 16 and np.abs(ours - opencv).mean() < 2


def test_native_and_numpy_mask_paths_agree(shapes):
    source = CocoSource(shapes.annotation_file, shapes.image_dir, max_instances=6)
    assert source._native_masks
    kwargs = dict(batch_size=2, training=True, seed=7, short_side=96, max_side=96)
    native = list(source.dataset(**kwargs))
    source._native_masks = False  # the fallback used when the op library is missing
    numpy_path = list(source.dataset(**kwargs))
    assert len(native) == len(numpy_path) == 3
    flipped = 0
    for (f1, t1), (f2, t2) in zip(native, numpy_path, strict=True):
        np.testing.assert_array_equal(f1["images"], f2["images"])
        np.testing.assert_array_equal(t1["masks"], t2["masks"])
        np.testing.assert_array_equal(t1["boxes"], t2["boxes"])
        flipped += int((f1["image_info"].numpy() == f2["image_info"].numpy()).all())
    assert flipped == 3


def _corrupt_jpeg_tf_rejects(data):
    """Bytes of `data` with a few entropy-coded bytes changed such that the header still
    parses and the file still ends with EOI, OpenCV still decodes it, and TensorFlow's
    decoder fails (found by a seeded search, so the test is deterministic)."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        b = bytearray(data)
        for q in rng.integers(len(data) // 3, len(data) - 64, 30):
            b[q] = int(rng.integers(0, 256))
        b = bytes(b)
        try:
            Image.open(io.BytesIO(b))
            tf.io.decode_jpeg(b, channels=3)
        except tf.errors.InvalidArgumentError:
            if cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) is not None:
                return b
        except Exception:  # noqa: BLE001  (header broken: try another seed)
            continue
    pytest.skip("no corruption found that only TensorFlow rejects")


@pytest.mark.parametrize("training", [False, True])
def test_jpeg_rejected_by_tensorflow_is_skipped_and_counted(tmp_path, training):
    shapes = make_shapes_dataset(tmp_path, 6, seed=5, image_size=96)
    with open(shapes.annotation_file) as f:
        images = json.load(f)["images"]
    bad = images[2]
    path = os.path.join(shapes.image_dir, bad["file_name"])
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(_corrupt_jpeg_tf_rejects(data))
    ds = coco_dataset(
        shapes.annotation_file, shapes.image_dir, batch_size=1, training=training, seed=1,
        short_side=96, max_side=96,
    )  # fmt: skip
    for epoch in range(2):  # the epoch completes; the count does not double
        ids = sorted(int(f["image_id"][0]) for f, _ in ds)
        assert ids == sorted(i["id"] for i in images if i["id"] != bad["id"]), epoch
        assert ds.info.skipped.get("corrupt_image") == 1
    assert "load_error" not in ds.info.skipped


def test_malformed_rle_annotation_is_skipped_when_parsing(tmp_path):
    shapes = make_shapes_dataset(tmp_path, 3, seed=6, image_size=64)
    with open(shapes.annotation_file) as f:
        data = json.load(f)
    image_id = data["images"][0]["id"]
    base = dict(image_id=image_id, category_id=data["categories"][0]["id"], iscrowd=0)
    base.update(bbox=[1.0, 1.0, 10.0, 10.0], area=100.0)
    data["annotations"] += [
        dict(base, id=9001, segmentation={"size": [64, 64], "counts": "1:"}),  # wrong sum
        dict(base, id=9002, segmentation={"size": [64, 64], "counts": [10, 20]}),  # short
        dict(base, id=9003, segmentation={"size": [64, 64], "counts": "0\x01"}),  # bad char
    ]
    with open(shapes.annotation_file, "w") as f:
        json.dump(data, f)
    ds = coco_dataset(shapes.annotation_file, shapes.image_dir, short_side=64, max_side=64)
    assert ds.info.skipped.get("invalid_rle") == 3
    assert sum(1 for _ in ds) == 3
