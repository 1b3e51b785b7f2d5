"""COCO-format instance segmentation → ``tf.data`` pipeline (docs/CONTRACTS.md elements).

How an element is made, and where the time goes:

1. **Once, up front (Python):** the JSON is read with pycocotools; every image and annotation
   is checked without rasterising anything (file exists, category known, bbox sane, polygons
   with ≥ 3 points, crowd regions set aside). Problems are counted in ``dataset.info`` and
   logged. This is a few seconds for COCO train2017.
2. **Per element, in ``tf.numpy_function`` (parallel map, ``AUTOTUNE``):** the file is read
   and its JPEG frame header checked by a small marker scanner (anything it does not
   recognise goes to PIL: missing, garbage, truncated files are counted in
   ``info.skipped``). On a record's first load its polygons become compressed RLE with
   pycocotools and empty masks are found from their areas; the result is kept on the record,
   so later epochs only read and check the file (~0.04 ms of GIL time at 600 px). A complete
   RGB/grayscale JPEG of the annotated size leaves Python as its bytes; anything else (CMYK,
   RGBA, PNG, 16-bit, palette, a JPEG without its end marker) is decoded here with
   OpenCV/PIL and converted to 8-bit RGB. Only small arrays cross back into TensorFlow.
3. **Per element, in TF ops (no GIL):** ``tf.io.decode_jpeg`` (TF's defaults, as in the
   exported serving signature), flipped when the element is flipped. A JPEG whose data is
   corrupt past a valid header can still fail in ``decode_jpeg``: ``ignore_errors`` drops
   that element and a ledger of element positions counts it as ``corrupt_image`` (logged
   with the file) — the epoch goes on. Pass ``verify_images=True`` to decode every image
   once up front with OpenCV instead, so the counts are final before training starts.
4. **Per element, in TF ops:** resize (bilinear), optional scale jitter and horizontal flip
   of the image and boxes (stateless random ops seeded per element, so a ``seed`` makes the
   stream reproducible); the masks are still RLE strings.
5. **Per batch:** ``padded_batch`` (images uint8, strings padded with ``""``), then the
   ``MncRasterizeMasks`` custom op decodes, flips, resizes (bit-identical to
   ``tf.image.resize`` + ``>= 0.5``) and pads every mask straight into the
   ``[B, N, Hp, Wp]`` batch tensor, with no per-element mask tensors in between;
   prefetch.

Every element has the same static shape (``pad_to``, ``max_instances``), so Keras never
retraces its train function. Images are uint8 and **not** normalised: the model does that
for its backbone (see :mod:`mnc_tf.data.preprocess`).

Performance notes (``benchmarks/bench_input.py``):

- the dense ``[B, N, Hp, Wp]`` masks of the contract dominate the cost for large ``N``
  (37 MB per image at N = 100, 608×608). Pick ``max_instances`` to fit the data (COCO has
  ≤ 93 instances per image, most far fewer); the smallest instances beyond it are dropped
  and counted;
- such big short-lived tensors make TF's default CPU allocator page-fault on every batch, so
  ``import mnc_tf`` turns on TF's pooling BFC allocator (``TF_CPU_ALLOCATOR_USE_BFC=true``
  unless already set; it must happen before TensorFlow's first op): 1.9x at N = 8, 6x at
  N = 100 on 600-px images;
- masks are rasterised per batch by the ``MncRasterizeMasks`` op (C++, masks in
  parallel; before it, per-element rasterisation, a float32 resize and ``padded_batch``'s
  zero-fill and copy moved each mask byte three times; without the op library the loader
  falls back to that path with a vectorised NumPy decoder), JPEGs by
  ``tf.io.decode_jpeg``; the Python part of an element holds the GIL, so it is kept to
  reading the file and scanning its header;
- images stay uint8 to the end: the model casts and normalises them on its device, so the
  CPU assembles (and a GPU receives) a quarter of the bytes of float32 images
  (``image_dtype=tf.float32`` casts the finished batch for other consumers);
- RLE annotations are validated once, when parsing (``invalid_rle``), so the per-element
  decoder never meets a malformed string;
- the dataset's length is unknown to ``tf.data`` (corrupt images are filtered lazily), so
  Keras warns "Your input ran out of data" once at the end of the first epoch; that is
  harmless. ``repeat=True`` with ``steps_per_epoch`` avoids it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import math
import os
import threading

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mnc_tf.data import preprocess
from mnc_tf.data.info import DatasetInfo
from mnc_tf.ops import flip_left_right, library_available, rasterize_masks

logger = logging.getLogger("mnc_tf.data")

_PAD_MULTIPLE = 32  # padded sizes are multiples of the backbone's coarsest stride


# --------------------------------------------------------------------------------------
# Annotation helpers (also used by the evaluators for original-resolution ground truth)
# --------------------------------------------------------------------------------------


def load_coco(annotation):
    """Ground truth as a ``pycocotools.coco.COCO``.

    Args:
      annotation: path of a COCO instances JSON, an already-parsed dict, or a ``COCO``.

    Returns:
      ``(coco, path_or_None)``.

    Raises:
      ValueError: the file is missing, not JSON, or lacks ``images`` / ``categories``.
    """
    if isinstance(annotation, COCO):
        return annotation, None
    path = None
    if isinstance(annotation, (str, os.PathLike)):
        path = os.fspath(annotation)
        if not os.path.isfile(path):
            raise ValueError(f"annotation_file {path!r} does not exist")
        try:
            with open(path) as f:
                annotation = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"annotation_file {path!r} is not readable JSON: {e}") from None
    if not isinstance(annotation, dict):
        raise ValueError(
            f"annotation_file must be a path, dict or COCO, got {type(annotation).__name__}"
        )
    missing = [k for k in ("images", "categories") if k not in annotation]
    if missing:
        raise ValueError(f"annotation_file lacks COCO keys {missing} (source: {path or 'dict'})")
    annotation.setdefault("annotations", [])
    coco = COCO()
    coco.dataset = annotation
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco, path


def clean_segmentation(segmentation, height, width):
    """Check a COCO ``segmentation`` without rasterising it.

    Returns:
      ``(segmentation_or_None, skip_reason_or_None, fix_reason_or_None)``: polygons with
      fewer than 3 points (< 6 numbers) are dropped (``fix 'polygon_dropped'``), and if none
      is left the annotation is skipped (``'invalid_polygon'``); an RLE whose ``size`` is not
      the image's, or anything else, is ``'missing_segmentation'``.
    """
    if isinstance(segmentation, list):
        polys = [
            [float(v) for v in p]
            for p in segmentation
            if isinstance(p, (list, tuple))
            and len(p) >= 6
            and len(p) % 2 == 0
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)
        ]
        if not polys:
            return None, ("invalid_polygon" if segmentation else "missing_segmentation"), None
        return polys, None, ("polygon_dropped" if len(polys) < len(segmentation) else None)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(s) for s in segmentation["size"]] != [height, width]:
            return None, "missing_segmentation", None
        if not _rle_covers(segmentation["counts"], height * width):
            return None, "invalid_rle", None
        return segmentation, None, None
    return None, "missing_segmentation", None


def _rle_covers(counts, num_pixels):
    """True if RLE ``counts`` (a list of run lengths or a compressed string) parses, has no
    negative run and covers exactly ``num_pixels`` (checked once, when parsing, so the
    per-element decoder never meets a malformed string)."""
    try:
        if isinstance(counts, list):
            runs = np.asarray(counts)
            if runs.size and runs.dtype.kind not in "iu":
                return False
        elif isinstance(counts, (str, bytes)):
            runs = rle_counts(counts)
        else:
            return False
    except (ValueError, UnicodeEncodeError):
        return False
    return runs.size == 0 or (runs.min() >= 0 and int(runs.sum()) == num_pixels)


def segmentation_to_rle(segmentation, height, width):
    """A cleaned segmentation (polygons, compressed or uncompressed RLE) → compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def rle_counts(counts):
    """COCO compressed RLE ``counts`` (bytes/str) → run lengths, int64 (NumPy, vectorised).

    The inverse of pycocotools' ``rleToString``: each run is a little-endian sequence of
    5-bit groups in characters ``48 + g`` (bit 5 set while more groups follow, bit 4 of the
    last group the sign), and from the fourth run on each value is stored as its difference
    to the run two places before.
    """
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("invalid character in RLE string (outside '0'..'o')")
    ends = np.flatnonzero((c & 0x20) == 0)
    if ends.size == 0 or ends[-1] != c.size - 1:
        raise ValueError("truncated RLE string (last character continues a number)")
    starts = np.concatenate([[0], ends[:-1] + 1])
    length = ends - starts + 1
    shift = 5 * (np.arange(c.size) - np.repeat(starts, length))
    values = np.add.reduceat((c & 0x1F) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << (5 * length)), values)
    values[1::2] = np.cumsum(values[1::2])  # x[i] += x[i - 2] for i > 2
    values[2::2] = np.cumsum(values[2::2])
    return values


def decode_rles(rles, height, width, flip=False):
    """Compressed RLEs → uint8 ``[k, H, W]`` masks (C order), mirrored left-right if ``flip``.

    3x faster than ``pycocotools.mask.decode`` + a transposing copy (which writes byte by
    byte with the GIL held): NumPy expands the runs of each mask into its column-major plane
    and OpenCV transposes it into place (a 90° clockwise rotation when flipping: transpose
    and mirror in one pass).
    """
    out = np.empty((len(rles), height, width), np.uint8)
    for k, rle in enumerate(rles):
        counts = rle_counts(rle["counts"])
        if counts.size and (counts.min() < 0 or counts.sum() != height * width):
            raise ValueError(
                f"RLE of size {rle.get('size')} does not cover a {height}x{width} image"
            )
        bits = np.zeros(len(counts), np.uint8)
        bits[1::2] = 1
        flat = np.repeat(bits, counts)
        if flat.size == 0:
            flat = np.zeros(height * width, np.uint8)
        plane = flat.reshape(width, height)
        if flip:
            cv2.rotate(plane, cv2.ROTATE_90_CLOCKWISE, dst=out[k])
        else:
            cv2.transpose(plane, dst=out[k])
    return out


def ground_truth_instances(coco, image_id, category_ids):
    """Original-resolution ground truth of one image, for evaluators.

    Args:
      coco: ``COCO`` ground truth; image_id: its id; category_ids: ``[C]``, label ``l`` is
        ``category_ids[l - 1]``.

    Returns:
      dict with ``masks`` uint8 ``[G, H, W]``, ``labels`` int32 ``[G]`` (1..C), ``crowd``
      bool ``[G]``. Annotations of unknown categories or without a usable segmentation
      are left out (they could not be matched by mask anyway).
    """
    img = coco.imgs[image_id]
    height, width = int(img["height"]), int(img["width"])
    label_of = {int(c): i + 1 for i, c in enumerate(category_ids)}
    rles, labels, crowd = [], [], []
    for ann in coco.imgToAnns.get(image_id, []):
        label = label_of.get(int(ann.get("category_id", -1)))
        segm, _, _ = clean_segmentation(ann.get("segmentation"), height, width)
        if label is None or segm is None:
            continue
        rles.append(segmentation_to_rle(segm, height, width))
        labels.append(label)
        crowd.append(bool(ann.get("iscrowd", 0)))
    return {
        "masks": decode_rles(rles, height, width),
        "labels": np.asarray(labels, np.int32),
        "crowd": np.asarray(crowd, bool),
    }


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


# --------------------------------------------------------------------------------------
# Source: parsed records + the per-element loader
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Record:
    image_id: int
    path: str
    height: int
    width: int
    boxes: np.ndarray  # float32 [n, 4] yxyx original pixels, clipped
    labels: np.ndarray  # int32 [n]
    segmentations: list  # cleaned COCO segmentations, one per row of boxes
    instances: tuple | None = None  # CocoSource._instances, once computed


class CocoSource:
    """Parsed, checked COCO annotations; builds any number of pipelines over them.

    Parsing happens once here; :meth:`dataset` can then be called per input pipeline (see
    :func:`coco_dataset_fn`). All pipelines share ``self.info`` and its skip counts.
    """

    def __init__(
        self,
        annotation_file,
        image_dir,
        *,
        drop_empty=False,
        image_ids=None,
        max_instances=100,
        verify_images=False,
    ):
        if not os.path.isdir(image_dir):
            raise ValueError(f"image_dir {os.fspath(image_dir)!r} is not a directory")
        if int(max_instances) < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        self.coco, path = load_coco(annotation_file)
        self.image_dir = os.fspath(image_dir)
        self.drop_empty = bool(drop_empty)
        self.max_instances = int(max_instances)
        # Masks are rasterised by the MncRasterizeMasks op when the op library is built (in
        # parallel, outside the GIL); by the NumPy decoder otherwise.
        self._native_masks = library_available()
        cats = sorted(self.coco.cats.values(), key=lambda c: int(c["id"]))
        self.info = DatasetInfo(
            class_names=[str(c.get("name", c["id"])) for c in cats],
            category_ids=[int(c["id"]) for c in cats],
            annotation_file=path,
            max_instances=self.max_instances,
            coco=self.coco,
        )
        self.records = self._parse(image_ids)
        if verify_images:
            self.records = [r for r in self.records if self._decode(r)[0] is not None]
        self.info.num_images = len(self.records)
        if self.info.skipped or self.info.fixed:
            logger.warning("%s: %s", path or "dataset", self.info.report())

    # -- parsing ----------------------------------------------------------------------

    def _parse(self, image_ids):
        coco, info = self.coco, self.info
        label_of = {cid: i + 1 for i, cid in enumerate(info.category_ids)}
        orphans = sum(len(a) for i, a in coco.imgToAnns.items() if i not in coco.imgs)
        if orphans:
            info.count("skipped", "unknown_image", n=orphans)
        if image_ids is None:
            image_ids = sorted(coco.imgs)
        else:
            unknown = [i for i in image_ids if i not in coco.imgs]
            if unknown:
                raise ValueError(f"image_ids not in the annotation file: {unknown[:10]}")
        records = []
        for image_id in image_ids:
            img = coco.imgs[image_id]
            path = os.path.join(self.image_dir, str(img.get("file_name", "")))
            if not img.get("file_name") or not os.path.isfile(path):
                info.count("skipped", "missing_image", detail=path)
                continue
            try:
                height, width = int(img["height"]), int(img["width"])
                if height <= 0 or width <= 0:
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                info.count("skipped", "size_mismatch", detail=f"{path}: no valid height/width")
                continue
            boxes, labels, segms = [], [], []
            for ann in coco.imgToAnns.get(image_id, []):
                row = self._parse_annotation(ann, height, width, label_of)
                if row is not None:
                    boxes.append(row[0])
                    labels.append(row[1])
                    segms.append(row[2])
            if not boxes and self.drop_empty:
                info.count("skipped", "empty_image", detail=path)
                continue
            records.append(
                _Record(
                    image_id=int(image_id),
                    path=path,
                    height=height,
                    width=width,
                    boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                    labels=np.asarray(labels, np.int32),
                    segmentations=segms,
                )
            )
        return records

    def _parse_annotation(self, ann, height, width, label_of):
        """One annotation → ``(box yxyx, label, segmentation)`` or ``None`` (counted)."""
        info = self.info
        where = f"annotation {ann.get('id')} of image {ann.get('image_id')}"
        if ann.get("iscrowd", 0):
            info.count("skipped", "crowd", detail=where)
            return None
        label = label_of.get(ann.get("category_id"))
        if label is None:
            info.count("skipped", "unknown_category", detail=f"{where}: {ann.get('category_id')}")
            return None
        segm, reason, fix = clean_segmentation(ann.get("segmentation"), height, width)
        if segm is None:
            info.count("skipped", reason, detail=where)
            return None
        bbox = ann.get("bbox")
        if bbox is None:  # rare; derive it from the mask
            bbox = mask_utils.toBbox(segmentation_to_rle(segm, height, width)).tolist()
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            info.count("skipped", "zero_area_box", detail=f"{where}: bbox {bbox!r}")
            return None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            info.count("skipped", "zero_area_box", detail=f"{where}: bbox {bbox!r}")
            return None
        box = [max(y, 0.0), max(x, 0.0), min(y + h, float(height)), min(x + w, float(width))]
        if box[2] <= box[0] or box[3] <= box[1]:
            info.count("skipped", "box_outside_image", detail=f"{where}: bbox {bbox!r}")
            return None
        if box != [y, x, y + h, x + w]:
            info.count("fixed", "box_clipped", detail=f"{where}: bbox {bbox!r}")
        if fix:
            info.count("fixed", fix, detail=where)
        return box, label, segm

    # -- per-element loading (runs inside tf.numpy_function) ------------------------

    def _decode(self, rec, encoded_ok=False):
        """Read + check one record's image.

        Returns ``(image, encoded, None)`` or ``(None, None, reason)``. With ``encoded_ok``,
        a complete RGB / grayscale JPEG of the annotated size is not decoded here:
        ``encoded`` holds its bytes for ``tf.io.decode_jpeg`` (which runs without the GIL)
        and ``image`` is ``None``; everything else is decoded with OpenCV / PIL as before.
        """
        info = self.info
        try:
            with open(rec.path, "rb") as f:
                data = f.read()
        except OSError as e:
            info.count("skipped", "missing_image", key=rec.image_id, detail=f"{rec.path}: {e}")
            return None, None, "missing_image"
        frame = _tf_jpeg_frame(data) if encoded_ok else None
        if frame is not None:  # the common case: a plain JPEG, decoded in TensorFlow
            height, width, mode = frame
            if (height, width) != (rec.height, rec.width):
                return self._size_mismatch(rec, (height, width))
            fix = _MODE_FIX.get(mode)
            if fix:
                info.count("fixed", fix, key=rec.image_id, detail=f"{rec.path} ({mode})")
            return None, data, None
        try:
            header = Image.open(io.BytesIO(data))  # reads the header only
        except Exception:  # PIL raises many types for garbage; all mean "not an image"
            header = None
        if header is not None and encoded_ok and _tf_decodable_jpeg(data, header):
            if header.size != (rec.width, rec.height):
                return self._size_mismatch(rec, (header.size[1], header.size[0]))
            fix = _MODE_FIX.get(header.mode)
            if fix:
                info.count("fixed", fix, key=rec.image_id, detail=f"{rec.path} ({header.mode})")
            return None, data, None
        image, mode = (None, None) if header is None else decode_image(data, header.mode)
        if image is None:
            info.count("skipped", "corrupt_image", key=rec.image_id, detail=rec.path)
            return None, None, "corrupt_image"
        fix = _MODE_FIX.get(mode, "converted_other")
        if fix:
            info.count("fixed", fix, key=rec.image_id, detail=f"{rec.path} ({mode})")
        if image.shape[:2] != (rec.height, rec.width):
            return self._size_mismatch(rec, image.shape[:2])
        return image, None, None

    def _size_mismatch(self, rec, size):
        self.info.count(
            "skipped",
            "size_mismatch",
            key=rec.image_id,
            detail=f"{rec.path}: decoded {tuple(size)}, annotated {(rec.height, rec.width)}",
        )
        return None, None, "size_mismatch"

    def _failed(self, image_id):
        """:meth:`_load`'s result for an element that is dropped (``ok`` = 0)."""
        return (
            np.array(b"", dtype=object),
            _NO_IMAGE,
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.int32),
            _NO_STRINGS if self._native_masks else _NO_MASKS,
            np.array([0, 0, image_id, 0], np.int64),
        )

    def _load(self, index, flip=False, position=-1, ledger=None):
        """numpy_function body: record index → ``(encoded JPEG or b"", image or empty,
        boxes, labels, RLE strings (native) or masks (NumPy path), meta)``, ``meta`` int64
        ``(height, width, image_id, ok)``.

        ``flip``: mirror image, boxes and masks horizontally. ``position``/``ledger``: see
        :class:`_DecodeLedger` (an index < 0 is the end-of-pass sentinel).
        """
        index = int(index)
        if index < 0:
            return self._failed(-1)
        rec = self.records[index]
        try:
            result = self._load_record(rec, bool(flip))
        except Exception as e:  # noqa: BLE001  (one bad record must not end the epoch)
            logger.debug("load error in %s", rec.path, exc_info=True)
            self.info.count("skipped", "load_error", key=rec.image_id, detail=f"{rec.path}: {e!r}")
            return self._failed(rec.image_id)
        if ledger is not None and result[-1][3]:
            ledger.sent(int(position), rec, encoded=bool(result[0]))
        return result

    def _instances(self, rec):
        """``(boxes, labels, rles, strings)`` of the instances of ``rec`` that enter the
        pipeline: at most ``max_instances`` (the largest), empty masks dropped (both
        counted), as compressed RLEs and, for the mask op, their ``counts`` strings.

        Computed on the record's first load and kept on it, so later epochs skip the
        polygon rasterisation (memory: about the size of the polygons themselves).
        """
        if rec.instances is not None:
            return rec.instances
        keep = np.arange(len(rec.labels))
        if len(keep) > self.max_instances:
            # Keep the largest instances: the smallest carry the least training signal.
            area = (rec.boxes[:, 2] - rec.boxes[:, 0]) * (rec.boxes[:, 3] - rec.boxes[:, 1])
            keep = np.sort(np.argsort(-area, kind="stable")[: self.max_instances])
            self.info.count(
                "skipped",
                "over_max_instances",
                key=rec.image_id,
                n=len(rec.labels) - len(keep),
                detail=f"{rec.path}: {len(rec.labels)} > max_instances={self.max_instances}",
            )
        rles = [segmentation_to_rle(rec.segmentations[i], rec.height, rec.width) for i in keep]
        # Empty masks are found from the RLE areas, before anything is rasterised.
        nonempty = mask_utils.area(rles) > 0 if rles else np.zeros(0, bool)
        for i in keep[~nonempty]:
            self.info.count("skipped", "empty_mask", key=(rec.image_id, int(i)), detail=rec.path)
        keep = keep[nonempty]
        rles = [r for r, ok in zip(rles, nonempty, strict=True) if ok]
        strings = np.array([_as_bytes(r["counts"]) for r in rles], dtype=object)
        # (Two loader threads may both compute it; the results are equal.)
        rec.instances = (rec.boxes[keep], rec.labels[keep], rles, strings)
        return rec.instances

    def _load_record(self, rec, flip=False):
        image, encoded, _ = self._decode(rec, encoded_ok=True)
        if image is None and encoded is None:
            return self._failed(rec.image_id)
        boxes, labels, rles, strings = self._instances(rec)
        if self.drop_empty and len(labels) == 0:
            self.info.count("skipped", "empty_image", key=rec.image_id, detail=rec.path)
            return self._failed(rec.image_id)
        if self._native_masks:  # rasterised by the MncRasterizeMasks op, outside the GIL
            instances = strings
        else:
            instances = decode_rles(rles, rec.height, rec.width, flip)
        if flip:  # preprocess.flip_left_right's mapping, in NumPy
            if image is not None:  # (an encoded JPEG is flipped after tf.io.decode_jpeg)
                image = cv2.flip(image, 1)
            y1, x1, y2, x2 = boxes.T
            boxes = np.stack([y1, rec.width - x2, y2, rec.width - x1], axis=1)
        return (
            np.array(b"" if encoded is None else encoded, dtype=object),
            _NO_IMAGE if image is None else image,
            # Copies: TensorFlow may wrap returned arrays without copying them, and these
            # are kept on the record for the next epoch.
            boxes if flip else boxes.copy(),
            labels.copy(),
            instances,
            np.array([rec.height, rec.width, rec.image_id, 1], np.int64),
        )

    def _load_tf(self, index, flip=False, position=-1, ledger=None):
        # Few outputs: converting each one back from NumPy costs the GIL-holding loader
        # ~10 us. `instances` are RLE strings (native path) or decoded masks (NumPy path);
        # `meta` is (height, width, image_id, ok).
        native = self._native_masks
        encoded, image, boxes, labels, instances, meta = tf.numpy_function(
            functools.partial(self._load, ledger=ledger),
            [index, flip, position],
            [
                tf.string,
                tf.uint8,
                tf.float32,
                tf.int32,
                tf.string if native else tf.uint8,
                tf.int64,
            ],
            name="mnc_load_coco_example",
        )
        encoded.set_shape([])
        image.set_shape([None, None, 3])
        meta.set_shape([4])
        image_id, ok = meta[2], meta[3] > 0
        flip = tf.convert_to_tensor(flip, tf.bool)

        mirror = flip_left_right if native else (lambda im: tf.reverse(im, [1]))

        def decode():
            decoded = tf.io.decode_jpeg(encoded, channels=3)
            return tf.cond(flip, lambda: mirror(decoded), lambda: decoded)

        # JPEGs are decoded here, in TensorFlow, outside the GIL (the numpy_function returns
        # their bytes); other formats arrive decoded (and flipped) from Python.
        image = tf.cond(tf.strings.length(encoded) > 0, decode, lambda: image)
        boxes.set_shape([None, 4])
        labels.set_shape([None])
        example = {
            "image": image,
            "boxes": boxes,
            "labels": labels,
            "image_id": image_id,
            "ok": ok,
            "position": tf.convert_to_tensor(position, tf.int64),
        }
        if native:
            # Masks stay RLE strings until the batch is complete: MncRasterizeMasks then
            # decodes, flips, resizes and pads them straight into the batch tensor.
            instances.set_shape([None])
            example["rles"] = instances
            example["mask_flip"] = flip
        else:
            instances.set_shape([None, None, None])
            example["masks"] = instances
        return example

    def _load_tf_flipped(self, index, random, position=-1, ledger=None):
        example = self._load_tf(index, preprocess.flip_coin(random), position, ledger)
        example["random"] = random
        return example

    # -- pipeline ---------------------------------------------------------------------

    def default_pad_to(self, short_side, max_side, scale_jitter=None):
        """Smallest ``(Hp, Wp)``, multiples of 32, that hold every resized image.

        Computed from the annotated sizes (with the largest jitter factor), so a dataset of
        square 128-px images padded for ``short_side=600`` is 608×608 rather than
        1024×1024; a dataset with both orientations gets ``(max_side, max_side)`` rounded up.
        """
        factor = max(scale_jitter) if scale_jitter else 1.0
        hp = wp = _PAD_MULTIPLE
        for rec in self.records:
            h, w = rec.height, rec.width
            s = min(short_side * factor / min(h, w), max_side * factor / max(h, w))
            hp = max(hp, int(round(h * s)))
            wp = max(wp, int(round(w * s)))
        return _round_up(hp), _round_up(wp)

    def dataset(
        self,
        batch_size=1,
        training=False,
        short_side=600,
        max_side=1000,
        pad_to=None,
        flip=None,
        scale_jitter=None,
        shuffle=None,
        cache=False,
        repeat=False,
        seed=None,
        drop_remainder=None,
        input_context=None,
        num_parallel_calls=tf.data.AUTOTUNE,
        image_dtype=tf.uint8,
    ):
        """Build one pipeline; see :func:`coco_dataset` for the arguments."""
        batch_size = _positive_int(batch_size, "batch_size")
        image_dtype = _image_dtype(image_dtype)
        if short_side <= 0 or max_side <= 0:
            raise ValueError(
                f"short_side and max_side must be > 0, got {short_side} and {max_side}"
            )
        if scale_jitter is not None:
            if len(scale_jitter) != 2 or not 0 < scale_jitter[0] <= scale_jitter[1]:
                raise ValueError(
                    f"scale_jitter must be (low, high) with 0 < low <= high, got {scale_jitter}"
                )
            scale_jitter = (float(scale_jitter[0]), float(scale_jitter[1]))
        if pad_to is None:
            pad_to = self.default_pad_to(short_side, max_side, scale_jitter)
        else:
            if len(pad_to) != 2:
                raise ValueError(f"pad_to must be (height, width), got {pad_to}")
            pad_to = (_positive_int(pad_to[0], "pad_to"), _positive_int(pad_to[1], "pad_to"))
        flip = training if flip is None else bool(flip)
        shuffle = training if shuffle is None else bool(shuffle)
        drop_remainder = training if drop_remainder is None else bool(drop_remainder)
        self.info.image_size = pad_to
        if not self.records:
            raise ValueError(f"no usable image in the dataset ({self.info.report()})")

        pipeline_id = 0
        ds = tf.data.Dataset.range(len(self.records))
        if input_context is not None:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
            pipeline_id = input_context.input_pipeline_id
            ds = ds.shard(input_context.num_input_pipelines, pipeline_id)
        # Different pipelines of one seeded run must not draw identical augmentations.
        seed = None if seed is None else int(seed) + 1_000_003 * pipeline_id
        if shuffle and not cache:
            # Shuffling indices is free; shuffling decoded images would need a big buffer.
            ds = ds.shuffle(len(self.records), seed=seed, reshuffle_each_iteration=True)
        # One random int64 per element, fresh each epoch, reproducible for a seed; every
        # augmentation derives stateless seeds from it (parallel map stays deterministic).
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        # Without a cache the loader flips while decoding (OpenCV, in place of tf.reverse
        # over image and masks); a cache holds unflipped examples, flipped afterwards.
        flip_at_load = flip and not cache
        # JPEGs are decoded by tf.io.decode_jpeg after the Python loader has checked their
        # header; one whose data is corrupt past the header can still fail there. Such an
        # element is dropped by ignore_errors (the Python loader catches everything, and the
        # RLE decoder only meets strings validated when parsing) and counted by the ledger,
        # which sees its position missing when the next element or the end-of-pass sentinel
        # arrives. The ledger's map is sequential on purpose: it must see positions in order.
        ledger = _DecodeLedger(self.info)
        if flip_at_load:
            ds = tf.data.Dataset.zip((ds, randoms))
        ds = ds.concatenate(_end_of_pass_sentinel(ds.element_spec)).enumerate()

        def load(position, element):
            if flip_at_load:
                index, random = element
                return self._load_tf_flipped(index, random, position, ledger)
            return self._load_tf(element, False, position, ledger)

        ds = ds.map(load, num_parallel_calls=num_parallel_calls)
        ds = ds.ignore_errors()
        ds = ds.map(ledger.arrived_tf)
        ds = ds.filter(_is_ok)
        if cache:
            ds = ds.cache("" if cache is True else os.fspath(cache))
            if shuffle:
                ds = ds.shuffle(min(len(self.records), 256), seed=seed)
        if repeat:
            ds = ds.repeat()
        if flip_at_load:
            ds = ds.map(lambda example: (example, example.pop("random")))
        else:
            ds = tf.data.Dataset.zip((ds, randoms))

        native = self._native_masks
        hp, wp, n = pad_to[0], pad_to[1], self.max_instances

        def prepare(example, random):
            image, info, boxes, labels, masks = preprocess.augment_example(
                example["image"],
                example["boxes"],
                example["labels"],
                example.get("masks"),
                short_side=short_side,
                max_side=max_side,
                max_size=pad_to,
                flip=flip and not flip_at_load,
                scale_jitter=scale_jitter,
                seed=random,
            )
            features = {"images": image, "image_info": info, "image_id": example["image_id"]}
            targets = {"boxes": boxes, "labels": labels}
            if native:
                targets["rles"] = example["rles"]
                mask_flip = example["mask_flip"]
                if flip and not flip_at_load:  # the decision augment_example just drew
                    mask_flip = preprocess.flip_coin(random)
                targets["mask_flip"] = mask_flip
            else:
                targets["masks"] = masks
            return features, targets

        ds = ds.map(prepare, num_parallel_calls=num_parallel_calls)
        # Padding happens while batching: padded_batch writes each padded batch once. The
        # loader already cut instances to max_instances, and the resize cap keeps every
        # image within pad_to, so the fixed shapes always fit. Natively, masks travel as
        # RLE strings ("" pads) and are rasterised into the finished batch (_finish_batch);
        # otherwise as decoded [n, h, w] masks, zero-padded here.
        target_shapes = {"boxes": [n, 4], "labels": [n]}
        target_padding = {"boxes": -1.0, "labels": -1}
        if native:
            target_shapes.update(rles=[n], mask_flip=[])
            target_padding.update(rles="", mask_flip=False)
        else:
            target_shapes["masks"] = [n, hp, wp]
            target_padding["masks"] = tf.constant(0, tf.uint8)
        ds = ds.padded_batch(
            batch_size,
            padded_shapes=(
                {"images": [hp, wp, 3], "image_info": [4, 2], "image_id": []},
                target_shapes,
            ),
            padding_values=(
                {
                    "images": tf.constant(0, tf.uint8),
                    "image_info": 0.0,
                    "image_id": tf.constant(0, tf.int64),
                },
                target_padding,
            ),
            drop_remainder=drop_remainder,
        )
        ds = ds.map(
            functools.partial(_finish_batch, padded_size=(hp, wp), image_dtype=image_dtype),
            num_parallel_calls=num_parallel_calls,
        )
        ds = ds.prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        # Sharded by hand above when an InputContext is given; otherwise shard by element
        # (the source is a range, so the default FILE policy would only warn and fall back).
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
            if input_context is not None
            else tf.data.experimental.AutoShardPolicy.DATA
        )
        ds = ds.with_options(options)
        ds.info = self.info
        return ds


class _DecodeLedger:
    """Counts the JPEGs that TensorFlow's decoder rejected after the loader passed them.

    The loader records the position (in the pass) of every element it hands on to the
    TF ops that finish it (``tf.io.decode_jpeg``, the RLE decoder); after
    ``ignore_errors``, elements arrive in order (the map is deterministic), so positions
    recorded but skipped over were dropped by an error in those ops.
    The end-of-pass sentinel (position of the last element + 1) settles the last ones; a
    position lower than the previous one starts a new pass. One ledger per pipeline; two
    iterators over one pipeline at the same time would confuse it (counts only). A pass
    abandoned early may leave a decode error uncounted, never counts one that did not
    happen.
    """

    def __init__(self, info):
        self._info = info
        self._lock = threading.Lock()
        self._pending = {}
        self._last = -1

    def sent(self, position, rec, encoded):
        with self._lock:
            self._pending[position] = (rec, encoded)

    def _settle(self, below):
        for position in sorted(p for p in self._pending if p < below):
            rec, encoded = self._pending.pop(position)
            if encoded:
                reason, why = "corrupt_image", "TensorFlow's JPEG decoder rejected the data"
            else:  # cannot happen with annotations checked when parsing; never silent
                reason, why = "load_error", "a TensorFlow op of the loader failed"
            self._info.count("skipped", reason, key=rec.image_id, detail=f"{rec.path}: {why}")

    def arrived(self, position):
        position = int(position)
        with self._lock:
            if position <= self._last:
                # A new iterator. The previous pass ended with its sentinel (everything
                # settled) or was abandoned: its entries past the last arrival were
                # prefetched but never consumed, not failed. (The new pass's first entries
                # are below the sentinel's position, so they stay.)
                for stale in [p for p in self._pending if p > self._last]:
                    del self._pending[stale]
            self._settle(position)
            self._pending.pop(position, None)
            self._last = position
        return np.bool_(True)

    def arrived_tf(self, example):
        done = tf.numpy_function(self.arrived, [example["position"]], tf.bool, stateful=True)
        with tf.control_dependencies([done]):
            return {k: tf.identity(v) if k == "ok" else v for k, v in example.items()}


def _end_of_pass_sentinel(element_spec):
    """One element with record index -1 (the loader returns a not-ok element for it)."""
    return tf.data.Dataset.from_tensors(
        tf.nest.map_structure(lambda spec: tf.constant(-1, spec.dtype), element_spec)
    )


def _finish_batch(features, targets, padded_size, image_dtype):
    """Batch-level work: images cast to ``image_dtype`` if that is not uint8, and, on the
    native path, the masks rasterised from their RLE strings straight into
    ``[B, N, Hp, Wp]``."""
    if image_dtype != tf.uint8:
        features = {**features, "images": tf.cast(features["images"], image_dtype)}
    if "rles" in targets:
        targets = dict(targets)
        sizes = tf.cast(tf.round(features["image_info"][:, :2]), tf.int32)
        targets["masks"] = rasterize_masks(
            targets.pop("rles"), sizes[:, 0], sizes[:, 1], targets.pop("mask_flip"), padded_size
        )
    return features, targets


def _image_dtype(dtype):
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:
        dtype = None
    if dtype not in (tf.uint8, tf.float16, tf.bfloat16, tf.float32):
        raise ValueError(f"image_dtype must be uint8, float16, bfloat16 or float32, got {dtype}")
    return dtype


def _is_ok(example):
    return example["ok"]


def _as_bytes(counts):
    return counts.encode("ascii") if isinstance(counts, str) else counts


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)
_NO_MASKS = np.zeros((0, 0, 0), np.uint8)
_NO_STRINGS = np.zeros(0, dtype=object)


def _round_up(v, multiple=_PAD_MULTIPLE):
    return int(math.ceil(v / multiple) * multiple)


def _positive_int(value, name):
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def coco_dataset(
    annotation_file,
    image_dir,
    batch_size=1,
    training=False,
    short_side=600,
    max_side=1000,
    pad_to=None,
    max_instances=100,
    flip=None,
    scale_jitter=None,
    shuffle=None,
    drop_empty=None,
    cache=False,
    repeat=False,
    seed=None,
    image_ids=None,
    drop_remainder=None,
    input_context=None,
    verify_images=False,
    num_parallel_calls=tf.data.AUTOTUNE,
    image_dtype=tf.uint8,
):
    """A batched ``tf.data.Dataset`` of ``(features, targets)`` from a COCO instances JSON.

    Element (docs/CONTRACTS.md), ``B = batch_size``, ``(Hp, Wp) = pad_to``,
    ``N = max_instances``::

      features = {"images": uint8 [B, Hp, Wp, 3] RGB (not normalised; see image_dtype),
                  "image_info": float32 [B, 4, 2], "image_id": int64 [B]}
      targets  = {"boxes": float32 [B, N, 4] yxyx resized pixels, -1 padding,
                  "labels": int32 [B, N] 1..C, -1 padding,
                  "masks": uint8 [B, N, Hp, Wp], 0 padding}

    The returned dataset carries ``dataset.info`` (:class:`mnc_tf.data.DatasetInfo`):
    classes, ``category_ids[label - 1]``, padded size and skip counts. (Further
    ``tf.data`` transformations return new objects without ``.info``.)

    Args:
      annotation_file: COCO instances JSON path (or a parsed dict / ``COCO``).
      image_dir: folder that ``images[*].file_name`` is relative to.
      batch_size: images per batch (the global batch when ``input_context`` is given).
      training: default for ``flip``, ``shuffle``, ``drop_empty``, ``drop_remainder``.
      short_side, max_side: resize targets (paper: 600 / 1000).
      pad_to: ``(Hp, Wp)``; default: the smallest multiple of 32 holding every resized
        image of this dataset (at most ``max_side`` rounded up). Images that would not fit
        are scaled down further (``image_info`` records the actual scale).
      max_instances: ``N``; extra instances (the smallest) are dropped and counted.
      flip: random horizontal flip; scale_jitter: ``(low, high)`` factor on both sides.
      shuffle: reshuffle every epoch; drop_empty: drop images without usable instances.
      cache: ``True`` caches decoded original-size examples in memory (small datasets
        only: COCO train would need ~100 GB), a path caches to files.
      repeat: repeat forever (for ``steps_per_epoch`` training).
      seed: makes shuffling and augmentation reproducible (each epoch still differs).
      image_ids: restrict to these image ids (in this order unless shuffled).
      drop_remainder: drop a last partial batch (default: ``training``; keeps the batch
        dimension static so the train function never retraces).
      input_context: a ``tf.distribute.InputContext``: shard by ``input_pipeline_id`` and
        use the per-replica batch size (see :func:`coco_dataset_fn`).
      verify_images: decode every image once up front so corrupt files are counted before
        the first epoch (slow on big datasets); otherwise they are found lazily.
      num_parallel_calls: parallelism of the decode and prepare maps.
      image_dtype: dtype of ``features["images"]``. uint8 (default) is what the model
        wants: it casts and normalises on its device, and a uint8 batch is a quarter of
        the bytes to assemble on the CPU and to copy to a GPU. ``tf.float32`` (values
        0..255) for consumers that need floats.
    """
    return coco_dataset_fn(
        annotation_file,
        image_dir,
        batch_size,
        training=training,
        short_side=short_side,
        max_side=max_side,
        pad_to=pad_to,
        max_instances=max_instances,
        flip=flip,
        scale_jitter=scale_jitter,
        shuffle=shuffle,
        drop_empty=drop_empty,
        cache=cache,
        repeat=repeat,
        seed=seed,
        image_ids=image_ids,
        drop_remainder=drop_remainder,
        verify_images=verify_images,
        num_parallel_calls=num_parallel_calls,
        image_dtype=image_dtype,
    )(input_context)


def coco_dataset_fn(annotation_file, image_dir, global_batch_size, **kwargs):
    """``dataset_fn(input_context)`` for ``strategy.distribute_datasets_from_function``.

    The annotations are parsed once, here; each input pipeline then gets its shard
    (``input_pipeline_id`` of ``num_input_pipelines``) batched with the per-replica batch
    size ``input_context.get_per_replica_batch_size(global_batch_size)``.

    Usage::

      fn = coco_dataset_fn(ann, images, global_batch_size=8, training=True, seed=0)
      dist = strategy.distribute_datasets_from_function(fn)
      fn.info.num_classes

    ``kwargs`` are :func:`coco_dataset`'s. With ``strategy.experimental_distribute_dataset``
    pass a plain :func:`coco_dataset` with the global batch size instead (it is sharded by
    element across workers).
    """
    training = kwargs.get("training", False)
    drop_empty = kwargs.pop("drop_empty", None)
    source = CocoSource(
        annotation_file,
        image_dir,
        drop_empty=training if drop_empty is None else drop_empty,
        image_ids=kwargs.pop("image_ids", None),
        max_instances=kwargs.pop("max_instances", 100),
        verify_images=kwargs.pop("verify_images", False),
    )

    def dataset_fn(input_context=None):
        return source.dataset(batch_size=global_batch_size, input_context=input_context, **kwargs)

    dataset_fn.info = source.info
    return dataset_fn
