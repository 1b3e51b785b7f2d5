"""Reading and checking image bytes (mnc_tf.data.image_io): the JPEG frame scanner against
PIL and TF, and read_image's skip / fix verdicts against PIL and tf.io.decode_jpeg."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mnc_tf.data.image_io import _tf_jpeg_frame, read_image


def _jpeg(mode="RGB", size=(37, 21), **save):
    rng = np.random.default_rng(0)
    channels = {"L": 1, "RGB": 3, "CMYK": 4}[mode]
    pixels = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    buf = io.BytesIO()
    image.save(buf, "JPEG", **save)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data,expected",
    [
        (_jpeg(), (21, 37, "RGB")),
        (_jpeg("L", (5, 9)), (9, 5, "L")),
        (_jpeg(progressive=True), (21, 37, "RGB")),
        (_jpeg(subsampling=0, quality=95), (21, 37, "RGB")),
        (_jpeg(exif=Image.Exif().tobytes() + b"\0" * 40), (21, 37, "RGB")),
        (_jpeg(optimize=True, size=(640, 480)), (480, 640, "RGB")),
        (_jpeg() + b"\0\0\n", (21, 37, "RGB")),  # padding after the end marker
        (_jpeg("CMYK"), None),  # 4 components: decoded by OpenCV / PIL
        (_jpeg()[:-40], None),  # truncated: no end marker
        (_jpeg()[:30], None),
        (b"\xff\xd8\xff\xd9", None),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, None),
        (b"", None),
    ],
)
def test_jpeg_frame_scanner_agrees_with_pil_and_tf(data, expected):
    assert _tf_jpeg_frame(data) == expected
    if expected is not None:  # independent references: PIL's header, TF's decoder
        with Image.open(io.BytesIO(data)) as im:
            assert (im.size[1], im.size[0], im.mode) == expected
        assert tuple(tf.io.decode_jpeg(data, channels=3).shape) == (*expected[:2], 3)


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_read_image_hands_plain_jpegs_to_tensorflow(tmp_path):
    data = _jpeg()
    read = read_image(_write(tmp_path, "a.jpg", data), (21, 37), encoded_ok=True)
    assert read.encoded == data and read.image is None and read.skip is read.fix is None
    gray = read_image(_write(tmp_path, "g.jpg", _jpeg("L")), (21, 37), encoded_ok=True)
    assert gray.encoded is not None and gray.fix == "converted_grayscale"
    # without encoded_ok the same file is decoded here, to the pixels TF decodes (+- IDCT)
    decoded = read_image(_write(tmp_path, "b.jpg", data), (21, 37)).image
    reference = tf.io.decode_jpeg(data, channels=3).numpy().astype(int)
    assert decoded.shape == (21, 37, 3) and np.abs(decoded - reference).max() <= 16


def test_read_image_decodes_other_formats_and_names_what_it_converted(tmp_path):
    rgba = np.random.default_rng(3).integers(0, 255, (6, 5, 4), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    read = read_image(_write(tmp_path, "x.png", buf.getvalue()), (6, 5), encoded_ok=True)
    np.testing.assert_array_equal(read.image, rgba[..., :3])
    assert read.encoded is None and read.fix == "converted_rgba" and read.skip is None


@pytest.mark.parametrize(
    "data,size,skip,fix",
    [
        (None, (21, 37), "missing_image", None),
        (b"not an image" * 9, (21, 37), "corrupt_image", None),
        (_jpeg(), (22, 37), "size_mismatch", None),  # JPEG: checked from its header
        (_jpeg("CMYK"), (22, 37), "size_mismatch", "converted_cmyk"),  # decoded, then checked
    ],
)
def test_read_image_skip_reasons(tmp_path, data, size, skip, fix):
    path = str(tmp_path / "missing.jpg") if data is None else _write(tmp_path, "f", data)
    read = read_image(path, size, encoded_ok=True)
    assert (read.skip, read.fix) == (skip, fix)
    assert read.image is None and read.encoded is None and path in read.detail
