"""Export of trained MNC models: SavedModel for TF Serving and COCO-format results.

``export_serving(model, export_dir, version=1)`` writes ``export_dir/<version>/`` with the
signatures ``serving_default`` (encoded images), ``serving_image_tensor`` (uint8 images) and
``serving_tf_example``; see :mod:`mnc_tf.export.serving`.
"""

from mnc_tf.export.coco import coco_results, encode_rle
from mnc_tf.export.predictor import (
    ExportedModel,
    Predictor,
    load_exported_model,
    load_keras_model,
    read_labels,
)
from mnc_tf.export.serving import (
    OUTPUT_KEYS,
    SIGNATURES,
    build_serving_functions,
    export_serving,
    latest_version_dir,
)

__all__ = [
    "ExportedModel",
    "Predictor",
    "load_exported_model",
    "coco_results",
    "encode_rle",
    "load_keras_model",
    "read_labels",
    "OUTPUT_KEYS",
    "SIGNATURES",
    "build_serving_functions",
    "export_serving",
    "latest_version_dir",
]
