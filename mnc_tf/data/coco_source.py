"""COCO annotations parsed once, and the per-element loader over them.

:class:`CocoSource` reads the JSON (:mod:`mnc_tf.data.annotations`), checks every image and
annotation up front without rasterising anything (counts in ``source.info``), and loads one
element at a time: :meth:`CocoSource.load_tf` runs a small Python body in a
``tf.numpy_function`` (read the file and check its header with
:func:`mnc_tf.data.image_io.read_image`; on a record's first load its polygons become
compressed RLE, kept on the record) and finishes in TF ops (``tf.io.decode_jpeg``, the
flip). The ``tf.data`` pipeline around it is :mod:`mnc_tf.data.coco_pipeline`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os

import numpy as np
import tensorflow as tf
from pycocotools import mask as mask_utils

from mnc_tf.data import preprocess
from mnc_tf.data.annotations import clean_segmentation, load_coco, segmentation_to_rle
from mnc_tf.data.image_io import read_image
from mnc_tf.data.info import DatasetInfo, label_of_category
from mnc_tf.ops import flip_left_right

logger = logging.getLogger("mnc_tf.data")

_PAD_MULTIPLE = 32  # padded sizes are multiples of the backbone's coarsest stride


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
        label_of = label_of_category(info.category_ids)
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
        """Read + check one record's image (:func:`mnc_tf.data.image_io.read_image`), counting
        what it found. Returns ``(image, encoded, skip_reason)``."""
        read = read_image(rec.path, (rec.height, rec.width), encoded_ok)
        if read.fix:
            self.info.count("fixed", read.fix, key=rec.image_id, detail=read.fix_detail)
        if read.skip:
            self.info.count("skipped", read.skip, key=rec.image_id, detail=read.detail)
            return None, None, read.skip
        return read.image, read.encoded, None

    def _failed(self, image_id):
        """:meth:`_load`'s result for an element that is dropped (``ok`` = 0)."""
        return (
            np.array(b"", dtype=object),
            _NO_IMAGE,
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.int32),
            _NO_STRINGS,
            np.array([0, 0, image_id, 0], np.int64),
        )

    def _load(self, index, position=-1, ledger=None):
        """numpy_function body: record index → ``(encoded JPEG or b"", image or empty,
        boxes, labels, RLE strings, meta)``, ``meta`` int64 ``(height, width, image_id,
        ok)``; all unflipped (:meth:`load_tf` flips).

        ``position``/``ledger``: see :class:`mnc_tf.data.decode_ledger.DecodeLedger` (an
        index < 0 is the end-of-pass sentinel).
        """
        index = int(index)
        if index < 0:
            return self._failed(-1)
        rec = self.records[index]
        try:
            result = self._load_record(rec)
        except Exception as e:  # noqa: BLE001  (one bad record must not end the epoch)
            logger.debug("load error in %s", rec.path, exc_info=True)
            self.info.count("skipped", "load_error", key=rec.image_id, detail=f"{rec.path}: {e!r}")
            return self._failed(rec.image_id)
        if ledger is not None and result[-1][3]:
            ledger.sent(int(position), rec, encoded=bool(result[0]))
        return result

    def _instances(self, rec):
        """``(boxes, labels, strings)`` of the instances of ``rec`` that enter the pipeline:
        at most ``max_instances`` (the largest), empty masks dropped (both counted), masks
        as the ``counts`` strings of compressed RLEs (for the mask op).

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
        rec.instances = (rec.boxes[keep], rec.labels[keep], strings)
        return rec.instances

    def _load_record(self, rec):
        image, encoded, _ = self._decode(rec, encoded_ok=True)
        if image is None and encoded is None:
            return self._failed(rec.image_id)
        boxes, labels, strings = self._instances(rec)
        if self.drop_empty and len(labels) == 0:
            self.info.count("skipped", "empty_image", key=rec.image_id, detail=rec.path)
            return self._failed(rec.image_id)
        return (
            np.array(b"" if encoded is None else encoded, dtype=object),
            _NO_IMAGE if image is None else image,
            # Copies: TensorFlow may wrap returned arrays without copying them, and these
            # are kept on the record for the next epoch.
            boxes.copy(),
            labels.copy(),
            strings,
            np.array([rec.height, rec.width, rec.image_id, 1], np.int64),
        )

    def load_tf(self, index, flip=None, position=-1, ledger=None):
        """One element, in TF ops around the Python loader: ``{"image", "boxes", "labels",
        "rles", "image_id", "ok", "position"}`` (docs/CONTRACTS.md's instances, original
        resolution, masks still RLE strings).

        ``flip``: ``None``, or the element's flip decision (bool scalar tensor): the image
        and boxes are then mirrored here, at original resolution (the masks when
        rasterised, from the element's ``flip``).
        """
        # Few outputs: converting each one back from NumPy costs the GIL-holding loader
        # ~10 us. `meta` is (height, width, image_id, ok).
        encoded, image, boxes, labels, rles, meta = tf.numpy_function(
            functools.partial(self._load, ledger=ledger),
            [index, position],
            [tf.string, tf.uint8, tf.float32, tf.int32, tf.string, tf.int64],
            name="mnc_load_coco_example",
        )
        encoded.set_shape([])
        image.set_shape([None, None, 3])
        boxes.set_shape([None, 4])
        labels.set_shape([None])
        rles.set_shape([None])
        meta.set_shape([4])
        image_id, ok = meta[2], meta[3] > 0
        # JPEGs are decoded here, in TensorFlow, outside the GIL (the numpy_function returns
        # their bytes); other formats arrive decoded from Python.
        image = tf.cond(
            tf.strings.length(encoded) > 0,
            lambda: tf.io.decode_jpeg(encoded, channels=3),
            lambda: image,
        )
        if flip is not None:
            image, boxes = tf.cond(
                tf.logical_and(flip, ok),
                lambda: (flip_left_right(image), preprocess.flip_boxes(boxes, meta[1])),
                lambda: (image, boxes),
            )
        # Masks stay RLE strings until the batch is complete: MncRasterizeMasks then
        # decodes, flips, resizes and pads them straight into the batch tensor.
        return {
            "image": image,
            "boxes": boxes,
            "labels": labels,
            "rles": rles,
            "image_id": image_id,
            "ok": ok,
            "position": tf.convert_to_tensor(position, tf.int64),
        }

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

    def dataset(self, batch_size=1, **kwargs):
        """Build one pipeline: :func:`mnc_tf.data.coco_pipeline.build_pipeline` (arguments as
        :func:`mnc_tf.data.coco_dataset`)."""
        from mnc_tf.data.coco_pipeline import build_pipeline

        return build_pipeline(self, batch_size, **kwargs)


def _as_bytes(counts):
    return counts.encode("ascii") if isinstance(counts, str) else counts


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)
_NO_STRINGS = np.zeros(0, dtype=object)


def _round_up(v, multiple=_PAD_MULTIPLE):
    return int(math.ceil(v / multiple) * multiple)
