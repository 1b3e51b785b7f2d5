"""Input pipelines: COCO JSON, SBD / VOC 2012, synthetic shapes; shared preprocessing.

Every dataset yields ``(features, targets)`` padded to fixed shapes (docs/CONTRACTS.md) and
carries ``dataset.info`` (:class:`DatasetInfo`). Images are raw RGB 0..255; the model
normalises them for its backbone.

From COCO JSON to batches: ``annotations`` (load, clean, RLE; also the evaluators' ground
truth and the COCO results format) → ``coco_source`` (records checked once; the
per-element loader, reading images through ``image_io``; ``decode_ledger`` counts JPEGs
TensorFlow rejects) → ``coco_pipeline`` (the ``tf.data`` pipeline: ``preprocess`` resizes
and flips, ``padded_batch``, masks rasterised per batch by the op library). ``sbd`` and
``shapes`` produce COCO annotations for it; ``info`` is ``DatasetInfo`` and the one
label ↔ category id mapping.
"""

from mnc_tf.data import preprocess
from mnc_tf.data.annotations import load_coco
from mnc_tf.data.coco_pipeline import coco_dataset, coco_dataset_fn
from mnc_tf.data.coco_source import CocoSource
from mnc_tf.data.info import DatasetInfo
from mnc_tf.data.sbd import VOC_CLASSES, cached_sbd_to_coco, sbd_dataset, sbd_to_coco
from mnc_tf.data.shapes import SHAPE_CLASSES, ShapesDataset, make_shapes_dataset

__all__ = [
    "CocoSource",
    "DatasetInfo",
    "SHAPE_CLASSES",
    "ShapesDataset",
    "VOC_CLASSES",
    "cached_sbd_to_coco",
    "coco_dataset",
    "coco_dataset_fn",
    "load_coco",
    "make_shapes_dataset",
    "preprocess",
    "sbd_dataset",
    "sbd_to_coco",
]
