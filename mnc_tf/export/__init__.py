"""Export of trained MNC models: SavedModel for TF Serving and COCO-format results.

``export_serving(model, export_dir, version=1)`` writes ``export_dir/<version>/`` with the
signatures ``serving_default`` (encoded images), ``serving_image_tensor`` (uint8 images) and
``serving_tf_example``; see :mod:`mnc_tf.export.serving`.
"""

import importlib

# Imported on first use (PEP 562), so that ``python -m mnc_tf.export.session_loader`` can quiet
# TensorFlow's console before anything imports it.
_EXPORTS = {
    "coco_results": "coco",
    "encode_rle": "coco",
    "ExportedModel": "predictor",
    "Predictor": "predictor",
    "load_exported_model": "predictor",
    "load_keras_model": "predictor",
    "read_labels": "predictor",
    "OUTPUT_KEYS": "serving",
    "SIGNATURES": "serving",
    "build_serving_functions": "serving",
    "export_serving": "serving",
    "latest_version_dir": "serving",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mnc_tf.export' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mnc_tf.export.{module}"), name)


def __dir__():
    return sorted([*globals(), *_EXPORTS])


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
