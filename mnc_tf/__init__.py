"""mnc_tf: Multi-task Network Cascades for instance-aware semantic segmentation (TF2 / Keras 3).

    import mnc_tf
    model = mnc_tf.MNC(num_classes=20, backbone="vgg16", num_stages=5)
    model.compile()
    model.fit(train_ds, validation_data=val_ds, epochs=...)
    out = model.predict(images)   # boxes, scores, classes, masks, num_detections
    model.export_serving("export/1")

Sub-packages mirror the method: ``modeling`` (backbone → stage 1 RPN → stage 2 masks →
stage 3 classes → cascade), ``ops``/``layers`` (RoI warping), ``data``, ``evaluation``,
``export``, ``training``. Heavy parts are imported on first use.
"""

import importlib
import os

__version__ = "0.1.0"

# TF's default CPU allocator hands every large tensor fresh pages from the kernel, so the
# input pipeline (megabyte images and masks, several per element) spends much of its time in
# page faults; its pooling BFC allocator reuses memory (the 600-px training pipeline 1.9x
# faster with 8 padded masks, 6x with 100: benchmarks/bench_input.py). It takes effect if set
# before TensorFlow runs its first op; set TF_CPU_ALLOCATOR_USE_BFC=false in the environment
# to keep TF's default.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

# Public name -> module that defines it; resolved lazily so `import mnc_tf` stays cheap and a
# missing optional part fails only where it is used.
_EXPORTS = {
    "MNC": "mnc_tf.modeling.mnc",
    "MNCConfig": "mnc_tf.config",
}
_SUBMODULES = (
    "config",
    "core",
    "data",
    "evaluation",
    "export",
    "layers",
    "modeling",
    "ops",
    "training",
    "visualize",
)

__all__ = sorted(_EXPORTS) + ["load_model"] + list(_SUBMODULES)


def load_model(path, **kwargs):
    """Load a ``.keras`` file saved by :class:`MNC` (registers mnc_tf's classes first)."""
    import keras

    importlib.import_module("mnc_tf.modeling")
    importlib.import_module("mnc_tf.layers")
    return keras.models.load_model(path, **kwargs)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"mnc_tf.{name}")
    raise AttributeError(f"module 'mnc_tf' has no attribute {name!r}")


def __dir__():
    return __all__
