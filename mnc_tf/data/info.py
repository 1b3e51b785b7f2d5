"""`DatasetInfo`: what travels with a dataset besides its tensors.

A ``tf.data.Dataset`` built by :func:`mnc_tf.data.coco_dataset` (or ``sbd_dataset``) carries
one of these as ``dataset.info``. It answers the questions the model and the evaluators need:
how many classes, which source category id a contiguous label stands for, and what was
dropped or repaired on the way in.

Label convention (docs/CONTRACTS.md): labels are contiguous ``1..num_classes``, 0 is the
background, and ``category_ids[label - 1]`` is the source (COCO) category id.

Skip-count report format: ``info.skipped`` and ``info.fixed`` are plain ``{reason: count}``
dicts (see :data:`SKIP_REASONS` / :data:`FIX_REASONS`); ``info.report()`` renders them as one
line each, e.g. ``skipped: corrupt_image=1 unknown_category=2 | fixed: box_clipped=1``.
Counts of problems found while reading annotations are complete when the dataset is built;
problems only visible when an image is decoded (corrupt files, converted colour modes,
instances beyond ``max_instances``) are counted the first time that image is read, once per
image however many epochs run.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import numpy as np

logger = logging.getLogger("mnc_tf.data")

# Records left out of the targets, by reason. An image-level reason removes the image,
# an instance-level reason removes one annotation.
SKIP_REASONS = {
    "missing_image": "image file does not exist (image skipped)",
    "corrupt_image": "image file cannot be decoded (image skipped when first read)",
    "size_mismatch": "decoded image size differs from the annotation's height/width (skipped)",
    "missing_annotation": "SBD/VOC mask file missing or unreadable (image skipped)",
    "unknown_image": "annotation refers to an image id not in 'images' (annotation skipped)",
    "empty_image": "image has no usable instance and drop_empty is on (image skipped)",
    "unknown_category": "annotation's category_id is not in 'categories' (annotation skipped)",
    "missing_segmentation": "annotation has no usable 'segmentation' (annotation skipped)",
    "invalid_polygon": "every polygon has fewer than 3 points (annotation skipped)",
    "invalid_rle": "RLE 'counts' malformed or not covering the image (annotation skipped)",
    "zero_area_box": "bbox width or height <= 0 (annotation skipped)",
    "box_outside_image": "bbox lies entirely outside the image (annotation skipped)",
    "empty_mask": "segmentation covers no pixel (annotation skipped)",
    "crowd": "iscrowd=1 region: not a target, ignored by the COCO evaluator (annotation)",
    "load_error": "any other error while reading the record, e.g. a malformed RLE string "
    "(image skipped, error logged)",
    "over_max_instances": "instance beyond max_instances; the smallest are dropped",
}

# Records repaired and kept.
FIX_REASONS = {
    "box_clipped": "bbox partly outside the image, clipped to it",
    "polygon_dropped": "polygons with fewer than 3 points dropped, the rest kept",
    "converted_grayscale": "1-channel image converted to RGB",
    "converted_rgba": "alpha channel dropped",
    "converted_cmyk": "CMYK image converted to RGB",
    "converted_other": "other colour mode (palette, 16-bit, ...) converted to 8-bit RGB",
}


def label_of_category(category_ids) -> dict[int, int]:
    """``{category id: label}`` for ``category_ids[label - 1]``: the one label ↔ category id
    mapping (the loader, the evaluators' ground truth and :class:`DatasetInfo` use it)."""
    return {int(c): i + 1 for i, c in enumerate(category_ids)}


def category_of_labels(labels, category_ids) -> np.ndarray:
    """Category ids of contiguous ``labels`` (int array, each in ``1..len(category_ids)``):
    ``category_ids[label - 1]``, the inverse of :func:`label_of_category`."""
    labels = np.asarray(labels)
    if not labels.size:
        return labels
    return np.asarray(category_ids)[labels - 1]


@dataclasses.dataclass
class DatasetInfo:
    """Class mapping and skip counts of one dataset.

    Attributes:
      class_names: ``[num_classes]`` names; ``class_names[label - 1]``.
      category_ids: ``[num_classes]`` source category ids; ``category_ids[label - 1]``.
      num_images: images in the dataset after the up-front checks (files that turn out to be
        corrupt when decoded are dropped later and counted in ``skipped['corrupt_image']``).
      annotation_file: path of the COCO JSON, or ``None`` when built in memory (SBD/VOC).
      image_size: ``(Hp, Wp)`` padded image size of every element.
      max_instances: ``N``, instance rows per element.
      skipped: ``{reason: count}`` of dropped records (see :data:`SKIP_REASONS`).
      fixed: ``{reason: count}`` of repaired records (see :data:`FIX_REASONS`).
      coco: the ``pycocotools.coco.COCO`` ground truth (all annotations, as in the file); the
        evaluators read it for original-resolution ground truth.
    """

    class_names: list[str]
    category_ids: list[int]
    num_images: int = 0
    annotation_file: str | None = None
    image_size: tuple[int, int] | None = None
    max_instances: int = 100
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    fixed: dict[str, int] = dataclasses.field(default_factory=dict)
    coco: Any = dataclasses.field(default=None, repr=False, compare=False)
    # Image/record keys already counted per reason, so repeated epochs count once.
    _seen: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    _lock: Any = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        """Foreground classes (labels ``1..num_classes``)."""
        return len(self.category_ids)

    def label_to_category_id(self, label: int) -> int:
        """Source category id of contiguous ``label`` (1-based)."""
        if not 1 <= int(label) <= self.num_classes:
            raise ValueError(f"label must be in 1..{self.num_classes}, got {label}")
        return int(category_of_labels(int(label), self.category_ids))

    def category_id_to_label(self, category_id: int) -> int:
        """Contiguous label (1-based) of a source category id."""
        label = label_of_category(self.category_ids).get(int(category_id))
        if label is None:
            raise ValueError(f"category_id {category_id} is not one of {self.category_ids}")
        return label

    def count(self, kind: str, reason: str, key=None, n: int = 1, detail: str = "") -> None:
        """Add ``n`` to ``self.<kind>[reason]`` and log it.

        Args:
          kind: ``"skipped"`` or ``"fixed"``.
          reason: a key of :data:`SKIP_REASONS` / :data:`FIX_REASONS`.
          key: hashable record id; a key already counted for this reason is ignored, so the
            map function may call this on every epoch.
          n: how many records this event stands for.
          detail: appended to the log line (which file, which annotation).
        """
        counts = self.skipped if kind == "skipped" else self.fixed
        with self._lock:
            seen = self._seen.setdefault(reason, set())
            if key is not None:
                if key in seen:
                    return
                seen.add(key)
            first = reason not in counts
            counts[reason] = counts.get(reason, 0) + n
        # Conversions are routine (COCO has ~1% grayscale images): warn on the first only.
        level = logging.WARNING if (kind == "skipped" or first) else logging.DEBUG
        if reason == "crowd":
            level = logging.DEBUG
        logger.log(level, "%s %s (x%d)%s", kind, reason, n, f": {detail}" if detail else "")

    def report(self) -> str:
        """One-line summary of the skip and fix counts (the format in the module docstring)."""

        def fmt(d):
            return " ".join(f"{k}={v}" for k, v in sorted(d.items())) or "none"

        return f"skipped: {fmt(self.skipped)} | fixed: {fmt(self.fixed)}"
