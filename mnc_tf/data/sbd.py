"""PASCAL VOC instance masks: the SBD ``.mat`` layout and the VOC 2012 PNG layout.

Both layouts are converted once into an in-memory COCO instances dict (RLE masks), so they
share the COCO pipeline, its checks and the evaluators (``dataset.info.coco`` is the ground
truth the VOC mAP^r evaluator reads).

SBD (Hariharan et al., ``benchmark_RELEASE/dataset``)::

  root/img/<name>.jpg
  root/inst/<name>.mat   GTinst.Segmentation  uint8 [H, W], 0 = background, k = instance k
                         GTinst.Categories    [n] class (1..20) of instance k = 1..n
  root/cls/<name>.mat    GTcls.Segmentation   uint8 [H, W] class map (used when an instance
                         has no entry in Categories)
  root/train.txt, root/val.txt

VOC 2012 (``VOCdevkit/VOC2012``)::

  root/JPEGImages/<name>.jpg
  root/SegmentationObject/<name>.png   palette indices: 0 background, k instance, 255 void
  root/SegmentationClass/<name>.png    palette indices: class 1..20, 255 void
  root/ImageSets/Segmentation/{train,val,trainval}.txt

A VOC instance's class is the most frequent class-map value under it (void excluded). Void
(255) pixels belong to no instance. Image ids are the digits of the name
(``2008_000002`` → ``2008000002``).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

from mnc_tf.data.coco_pipeline import coco_dataset_fn
from mnc_tf.io_utils import atomic_write_json

logger = logging.getLogger("mnc_tf.data")

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

_VOID = 255


def detect_layout(root):
    """``"sbd"`` or ``"voc"`` from the folders present; ``ValueError`` if neither."""
    if os.path.isdir(os.path.join(root, "inst")):
        return "sbd"
    if os.path.isdir(os.path.join(root, "SegmentationObject")):
        return "voc"
    raise ValueError(
        f"root {os.fspath(root)!r} has neither inst/ (SBD) nor SegmentationObject/ (VOC 2012)"
    )


def _split_names(root, split, layout):
    path = (
        os.path.join(root, f"{split}.txt")
        if layout == "sbd"
        else os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    )
    if not os.path.isfile(path):
        raise ValueError(f"split {split!r}: list file {path!r} does not exist")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _mat_field(struct, name):
    # loadmat(squeeze_me=True, struct_as_record=False) gives a mat_struct; be lenient with
    # files saved as record arrays too.
    if hasattr(struct, name):
        return getattr(struct, name)
    return struct[name]


def _read_sbd(root, name):
    """``(instance map [H, W], {instance k: class})`` of one SBD image."""
    inst = scipy.io.loadmat(
        os.path.join(root, "inst", f"{name}.mat"), squeeze_me=True, struct_as_record=False
    )["GTinst"]
    seg = np.asarray(_mat_field(inst, "Segmentation"))
    cats = np.atleast_1d(np.asarray(_mat_field(inst, "Categories"))).astype(int).reshape(-1)
    classes = {k + 1: int(c) for k, c in enumerate(cats)}
    missing = [k for k in np.unique(seg) if k not in (0, _VOID) and int(k) not in classes]
    if missing:  # fall back to the class map
        cls = scipy.io.loadmat(
            os.path.join(root, "cls", f"{name}.mat"), squeeze_me=True, struct_as_record=False
        )["GTcls"]
        class_map = np.asarray(_mat_field(cls, "Segmentation"))
        for k in missing:
            classes[int(k)] = _majority(class_map[seg == k])
    return seg, classes


def _read_voc(root, name):
    seg = np.asarray(Image.open(os.path.join(root, "SegmentationObject", f"{name}.png")))
    class_map = np.asarray(Image.open(os.path.join(root, "SegmentationClass", f"{name}.png")))
    classes = {
        int(k): _majority(class_map[seg == k]) for k in np.unique(seg) if k not in (0, _VOID)
    }
    return seg, classes


def _majority(values):
    values = values[(values != 0) & (values != _VOID)]
    return int(np.bincount(values).argmax()) if values.size else 0


def _image_id(name, index):
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else index + 1


def sbd_to_coco(root, split="train", layout="auto"):
    """Convert one split of an SBD or VOC 2012 tree into a COCO instances dict.

    Returns:
      ``(coco_dict, image_dir, skipped)``; ``skipped`` counts images whose mask file is
      missing or unreadable (``{"missing_annotation": n}``), each also logged.
    """
    root = os.fspath(root)
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in ("sbd", "voc"):
        raise ValueError(f"layout must be 'auto', 'sbd' or 'voc', got {layout!r}")
    image_dir = _image_dir(root, layout)
    reader = _read_sbd if layout == "sbd" else _read_voc
    images, annotations, skipped = [], [], {}
    for index, name in enumerate(_split_names(root, split, layout)):
        try:
            seg, classes = reader(root, name)
        except (OSError, KeyError, ValueError, AttributeError, TypeError) as e:
            skipped["missing_annotation"] = skipped.get("missing_annotation", 0) + 1
            logger.warning("skipped missing_annotation: %s: %s", name, e)
            continue
        height, width = seg.shape[:2]
        image_id = _image_id(name, index)
        images.append(
            {"id": image_id, "file_name": f"{name}.jpg", "height": height, "width": width}
        )
        for k in sorted(classes):
            visible = np.asfortranarray((seg == k).astype(np.uint8))
            if not visible.any():
                continue
            rle = mask_utils.encode(visible)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    # 0 = instance without a class: kept, so the loader counts it as unknown
                    "category_id": classes[k],
                    "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": f"{layout} {split} converted by mnc_tf"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(VOC_CLASSES)],
    }
    return coco, image_dir, skipped


def _image_dir(root, layout):
    return os.path.join(root, "img" if layout == "sbd" else "JPEGImages")


def cached_sbd_to_coco(root, split="train", layout="auto", cache=None):
    """:func:`sbd_to_coco`, its result kept in the JSON file ``cache`` (when given).

    The one writer of the cache (``{"coco", "image_dir", "skipped"}``, written atomically):
    an existing file is read instead of converting again (reading all of SBD's ``.mat``
    files takes about a minute). The image folder is always derived from ``root``.

    Returns:
      ``(coco_dict, image_dir, skipped)`` as :func:`sbd_to_coco`.
    """
    root = os.fspath(root)
    if layout == "auto":
        layout = detect_layout(root)
    if cache and os.path.isfile(cache):
        with open(cache) as f:
            cached = json.load(f)
        return cached["coco"], _image_dir(root, layout), cached.get("skipped", {})
    coco, image_dir, skipped = sbd_to_coco(root, split, layout)
    if cache:
        atomic_write_json(cache, {"coco": coco, "image_dir": image_dir, "skipped": skipped})
    return coco, image_dir, skipped


def sbd_dataset(
    root,
    split="train",
    layout="auto",
    annotation_cache=None,
    batch_size=1,
    training=False,
    input_context=None,
    **kwargs,
):
    """:func:`mnc_tf.data.coco_dataset` over an SBD or VOC 2012 instance split.

    Args:
      root: the folder holding ``inst/`` (SBD) or ``SegmentationObject/`` (VOC 2012).
      split: list-file name (``train``, ``val``, ``trainval``).
      layout: ``"auto"``, ``"sbd"`` or ``"voc"``.
      annotation_cache: optional JSON path: the converted annotations are written there
        and reused next time (reading all of SBD's ``.mat`` files takes about a minute).
      batch_size, training, input_context, kwargs: as :func:`mnc_tf.data.coco_dataset`
        (labels 1..20 in :data:`VOC_CLASSES` order; category ids equal the labels).

    Returns:
      The ``tf.data.Dataset``; ``dataset.info.coco`` holds the converted ground truth.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"root {root!r} is not a directory")
    coco, image_dir, skipped = cached_sbd_to_coco(root, split, layout, annotation_cache)
    dataset_fn = coco_dataset_fn(coco, image_dir, batch_size, training=training, **kwargs)
    for reason, n in skipped.items():
        dataset_fn.info.count("skipped", reason, n=n)
    return dataset_fn(input_context)
