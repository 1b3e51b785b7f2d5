"""Image bytes → pixels: the one read-and-check path of the COCO loader.

:func:`read_image` reads a file and decides, from its header alone where possible, who
decodes it: a complete 8-bit RGB / grayscale JPEG of the annotated size leaves as its bytes
for ``tf.io.decode_jpeg`` (no GIL; :func:`_tf_jpeg_frame` scans its frame header, PIL
looks at anything the scanner does not recognise); anything else (CMYK, RGBA, PNG, 16-bit,
palette, a JPEG without its end marker) is decoded here by :func:`decode_image` (OpenCV,
PIL for the formats OpenCV lacks) and converted to 8-bit RGB. The caller counts the result
(``skip`` / ``fix`` reasons of :mod:`mnc_tf.data.info`).
"""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
from PIL import Image


@dataclasses.dataclass
class ImageRead:
    """What :func:`read_image` found.

    Attributes:
      image: uint8 ``[H, W, 3]`` RGB decoded here, or ``None``.
      encoded: the JPEG bytes for ``tf.io.decode_jpeg``, or ``None``.
      skip: a skip reason (``missing_image``, ``corrupt_image``, ``size_mismatch``) or
        ``None``; then ``image`` and ``encoded`` are ``None``.
      fix: a fix reason (a colour-mode conversion) or ``None``; counted even when the
        image is then skipped for its size, as the loader always did.
      detail: text for the log line of ``skip``; fix_detail: of ``fix``.
    """

    image: np.ndarray | None = None
    encoded: bytes | None = None
    skip: str | None = None
    fix: str | None = None
    detail: str = ""
    fix_detail: str = ""


def read_image(path, size, encoded_ok=False):
    """Read and check the image file ``path`` annotated as ``size = (height, width)``.

    With ``encoded_ok``, a complete RGB / grayscale JPEG of the annotated size is not
    decoded: :attr:`ImageRead.encoded` holds its bytes. Everything else is decoded with
    OpenCV / PIL.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return ImageRead(skip="missing_image", detail=f"{path}: {e}")
    frame = _tf_jpeg_frame(data) if encoded_ok else None
    if frame is not None:  # the common case: a plain JPEG, decoded in TensorFlow
        height, width, mode = frame
        if (height, width) != tuple(size):
            return _size_mismatch(path, (height, width), size)
        return ImageRead(encoded=data, fix=_MODE_FIX.get(mode), fix_detail=f"{path} ({mode})")
    try:
        header = Image.open(io.BytesIO(data))  # reads the header only
    except Exception:  # PIL raises many types for garbage; all mean "not an image"
        header = None
    if header is not None and encoded_ok and _tf_decodable_jpeg(data, header):
        if header.size != (size[1], size[0]):
            return _size_mismatch(path, (header.size[1], header.size[0]), size)
        fix = _MODE_FIX.get(header.mode)
        return ImageRead(encoded=data, fix=fix, fix_detail=f"{path} ({header.mode})")
    image, mode = (None, None) if header is None else decode_image(data, header.mode)
    if image is None:
        return ImageRead(skip="corrupt_image", detail=path)
    fix = _MODE_FIX.get(mode, "converted_other")
    if image.shape[:2] != tuple(size):
        result = _size_mismatch(path, image.shape[:2], size)
        result.fix, result.fix_detail = fix, f"{path} ({mode})"
        return result
    return ImageRead(image=image, fix=fix, fix_detail=f"{path} ({mode})")


def _size_mismatch(path, decoded, annotated):
    detail = f"{path}: decoded {tuple(decoded)}, annotated {tuple(annotated)}"
    return ImageRead(skip="size_mismatch", detail=detail)


def decode_image(data, mode=None):
    """Encoded bytes → ``(uint8 [H, W, 3] RGB, PIL mode)``; ``(None, None)`` if undecodable.

    OpenCV decodes (fast, GIL released, EXIF orientation ignored because COCO annotations
    refer to the stored pixels); PIL reads only the header to tell which conversion happened
    (skipped when the caller already read it and passes ``mode``) and decodes the formats
    OpenCV lacks (e.g. GIF).
    """
    if mode is None:
        try:
            mode = Image.open(io.BytesIO(data)).mode
        except Exception:  # PIL raises many types for garbage; all mean "not an image"
            return None, None
    buf = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is not None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), mode
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB")), mode
    except Exception:
        return None, None


# JPEGs that TensorFlow's decoder takes directly (channels=3 gives RGB for all three).
_TF_JPEG_MODES = ("RGB", "YCbCr", "L")


def _tf_decodable_jpeg(data, header):
    """True if ``data`` is a complete baseline/progressive 8-bit JPEG in a mode that
    ``tf.io.decode_jpeg(channels=3)`` turns into the same RGB pixels as OpenCV.

    The end-of-image marker must close the file: a truncated JPEG takes the Python path,
    where it is decoded as far as it goes or counted as corrupt, instead of failing inside
    TensorFlow.
    """
    return header.format == "JPEG" and header.mode in _TF_JPEG_MODES and _ends_with_eoi(data)


def _ends_with_eoi(data):
    """True if the JPEG end-of-image marker closes ``data`` (trailing padding allowed)."""
    return data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


# Frame headers tf.io.decode_jpeg decodes: baseline, extended sequential, progressive
# (Huffman-coded, 8-bit); 1 component is grayscale, 3 are YCbCr or RGB.
_TF_SOF_MARKERS = (0xC0, 0xC1, 0xC2)
_JPEG_MODES = {1: "L", 3: "RGB"}


def _tf_jpeg_frame(data):
    """``(height, width, mode)`` if ``data`` is a complete JPEG that ``tf.io.decode_jpeg``
    decodes to RGB like OpenCV does, else ``None`` (then PIL looks at it).

    Walks the marker segments up to the frame header (a handful of steps), the part of
    PIL's header parsing that matters here, at a fraction of its cost, because it runs
    with the GIL held for every element. The end-of-image marker must close the file, as
    in :func:`_tf_decodable_jpeg`.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    if not _ends_with_eoi(data):
        return None
    p = 2
    while p + 4 <= n:
        if data[p] != 0xFF:
            return None
        marker = data[p + 1]
        if marker == 0xFF:  # fill byte
            p += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            p += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before a frame header
            return None
        length = (data[p + 2] << 8) | data[p + 3]
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _TF_SOF_MARKERS or length < 8 or p + 10 > n:
                return None
            precision = data[p + 4]
            height = (data[p + 5] << 8) | data[p + 6]
            width = (data[p + 7] << 8) | data[p + 8]
            mode = _JPEG_MODES.get(data[p + 9])
            if precision != 8 or height == 0 or width == 0 or mode is None:
                return None
            return height, width, mode
        p += 2 + length
    return None


_MODE_FIX = {
    "RGB": None,
    "YCbCr": None,
    "L": "converted_grayscale",
    "1": "converted_grayscale",
    "LA": "converted_rgba",
    "RGBA": "converted_rgba",
    "CMYK": "converted_cmyk",
}
