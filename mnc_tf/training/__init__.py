"""Training at scale: experiment configs, tf.distribute strategies, checkpoints, ``train()``.

    from mnc_tf.training import load_config, train
    history = train(load_config("configs/shapes_tiny_mnc5.yaml"), "runs/shapes")

or the CLI ``mnc-train --config configs/shapes_tiny_mnc5.yaml --model-dir runs/shapes``.
Modules: ``config`` (YAML experiment config), ``strategy`` (strategy choice, global batch, lr
scaling), ``data_sources`` (the run's datasets: synthetic shapes, COCO, SBD / VOC),
``checkpoints`` (atomic step checkpoints and exact resume), ``resumable_input`` (the ``fit``
input whose position the checkpoints hold), ``best_model`` (``best.keras`` / ``final.keras``),
``summaries`` (TensorBoard), ``progress`` (log lines), ``train`` (the driver).
"""

import importlib

_EXPORTS = {
    "ExperimentConfig": "mnc_tf.training.config",
    "DataConfig": "mnc_tf.training.config",
    "TrainConfig": "mnc_tf.training.config",
    "ShapesConfig": "mnc_tf.training.config",
    "load_config": "mnc_tf.training.config",
    "select_strategy": "mnc_tf.training.strategy",
    "BackupAndRestore": "mnc_tf.training.checkpoints",
    "BestModelCheckpoint": "mnc_tf.training.best_model",
    "ResumableInput": "mnc_tf.training.resumable_input",
    "TrainingSummaries": "mnc_tf.training.summaries",
    "train": "mnc_tf.training.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy: importing mnc_tf.training must not import TensorFlow (multi-worker strategies must
    # be created before any TF op, and config validation should be instant).
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mnc_tf.training' has no attribute {name!r}")


def __dir__():
    return __all__
