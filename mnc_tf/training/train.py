"""``train(config, model_dir)``: one experiment config → a trained, checkpointed, exported model.

What a run does, in order:

1. picks the ``tf.distribute`` strategy (:mod:`mnc_tf.training.strategy`) — first, because a
   multi-worker strategy must exist before any other TensorFlow op runs;
2. sets the mixed-precision policy and the random seed;
3. builds the datasets (:mod:`mnc_tf.training.data_sources`; the synthetic shapes are
   generated on first use) with the *global* batch
   ``per_replica_batch_size × replicas``, split per replica by
   ``strategy.distribute_datasets_from_function`` (each input pipeline reads its own shard);
4. builds ``mnc_tf.MNC`` inside ``strategy.scope()`` from the config as written, and
   ``compile()``s it with the paper's optimiser, at the learning rate scaled linearly to the
   global batch (logged; the optimizer holds it, the model's config keeps the user's), XLA off;
5. ``fit``s for ``model.optimizer.total_steps`` steps, reading an iterator created up front
   (:class:`ResumableInput`) so that the checkpoints hold the input pipeline's position, with,
   in this order, :class:`BackupAndRestore` (checkpoints every ``checkpoint_every`` steps,
   exact resume), evaluation every ``eval_every_epochs`` epochs (COCO box/mask AP and VOC
   mAP^r into the logs), ``best.keras`` on ``best_metric``, TensorBoard
   (:class:`TrainingSummaries`), and Keras's progress bar;
6. writes ``final.keras``, ``history.json``, ``run_info.json`` (steps, time, images/s, the
   resolved config) and, last, the SavedModel ``export/1`` (TF Serving layout).

``model_dir`` layout::

    config.yaml        the resolved config (written once the model builds; a resumed run
                       warns on changes)
    checkpoints/       ckpt-<step>.* + checkpoint (tf.train.CheckpointManager)
    logs/              TensorBoard event files
    best.keras(.json)  best model by train.best_metric
    final.keras        the model after the last step
    export/1/          SavedModel for TF Serving (mnc_tf.export.serving.export_serving)
    history.json       Keras history of the last process that trained
    run_info.json      strategy, global batch, learning rate, steps, wall time, throughput

Running the same command again resumes from the latest checkpoint, bit for bit where the input
position was saved (docs/training.md, "Resume"), or does nothing more than re-export (keeping
``history.json``) when the run had finished. What killed writes leave behind is removed first.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
import types

from mnc_tf.io_utils import atomic_write_json, atomic_write_text
from mnc_tf.training import strategy as strategy_lib
from mnc_tf.training.config import ExperimentConfig, load_config
from mnc_tf.training.data_sources import (  # noqa: F401 - DataSplits, ensure_shapes_dataset:
    DataSplits,  # re-exported (their import path before they moved)
    build_datasets,
    ensure_shapes_dataset,
)

logger = logging.getLogger("mnc_tf.training")


# ---------------------------------------------------------------------------------- model
def build_model(config: ExperimentConfig, info):
    """``mnc_tf.MNC`` from the ``model`` section (as the user wrote it), classes from ``info``.

    Call inside ``strategy.scope()``. The learning rate scaled to the global batch goes to
    the optimizer only (:func:`build_optimizer`), so the saved model records the user's.
    """
    from mnc_tf.modeling.mnc import MNC

    num_classes = config.model.num_classes
    backbone = config.model.backbone
    num_stages = config.model.num_stages
    if num_classes is not None and num_classes != info.num_classes:
        raise ValueError(
            f"model.num_classes is {num_classes} but the training data has {info.num_classes} "
            "classes; remove model.num_classes to take it from the data."
        )
    mnc_cfg = config.mnc_config()
    return MNC(
        info.num_classes,
        backbone=backbone,
        num_stages=num_stages,
        config=mnc_cfg,
        class_names=list(info.class_names),
        category_ids=list(info.category_ids),
    )


def build_optimizer(model, learning_rate: float):
    """The optimizer ``model.compile()`` would build from ``model.config``, at
    ``learning_rate`` instead of the config's (the rate scaled to the global batch).

    ``model.config`` is not changed: only the optimizer (and its schedule, saved with the
    optimizer in checkpoints and ``.keras`` files) carries the scaled rate.
    """
    from mnc_tf.modeling.optim import build_optimizer as build_from_config

    return build_from_config(model.config.optimizer.replace(learning_rate=learning_rate))


# ---------------------------------------------------------------------------------- callbacks
def _evaluation_callback(config, splits, val_annotations):
    """COCO box/mask AP and VOC mAP^r on the held-out split into the epoch logs, or None."""
    if splits.val is None or not config.train.eval_every_epochs:
        return None
    from mnc_tf.evaluation import COCOEvaluator, EvaluationCallback, VOCEvaluator

    info = splits.val_info
    ground_truth = info.coco if info.coco is not None else val_annotations
    evaluators = [
        COCOEvaluator(ground_truth, category_ids=info.category_ids),
        VOCEvaluator(info.num_classes),
    ]
    # No log_dir: TrainingSummaries writes these metrics at the global step with the rest.
    return EvaluationCallback(
        splits.val, evaluators, every_n_epochs=config.train.eval_every_epochs, info=info
    )


def _summary_images(splits, n):
    """The first ``n`` held-out images (and their image_info) for TensorBoard drawings."""
    import numpy as np

    if not n or splits.val is None:
        return None, None
    images, infos = [], []
    for features, _ in splits.val.unbatch().take(n):
        images.append(features["images"].numpy())
        infos.append(features["image_info"].numpy())
    if not images:
        return None, None
    return np.stack(images), np.stack(infos)


def _check_resume_config(model_dir, config):
    """Warn when ``config`` differs from the ``config.yaml`` of the run being resumed.

    Returns True when ``config.yaml`` does not exist yet (:func:`_write_config` writes it
    once the model has been built, so a config that fails never leaves one behind).
    """
    path = os.path.join(model_dir, "config.yaml")
    current = config.to_dict()
    if os.path.isfile(path):
        import yaml

        with open(path) as f:
            previous = yaml.safe_load(f) or {}
        changed = []
        for section in ("model", "data", "train"):
            a, b = previous.get(section, {}) or {}, current.get(section, {})
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    changed.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
        if changed:
            logger.warning(
                "model_dir %s was started with a different config; resuming anyway with the "
                "new one (%s)",
                model_dir,
                "; ".join(changed),
            )
        return False
    return True


def _write_config(model_dir, config):
    atomic_write_text(os.path.join(model_dir, "config.yaml"), config.to_yaml())


def _write_json(path, obj):
    atomic_write_json(path, obj, indent=1, default=float)


# ---------------------------------------------------------------------------------- train
def train(
    config: ExperimentConfig | str | dict,
    model_dir: str,
    *,
    overrides=(),
    strategy=None,
):
    """Train (or resume) the experiment ``config`` in ``model_dir``; see the module docstring.

    Args:
      config: an :class:`ExperimentConfig`, a YAML path or a nested dict.
      model_dir: output directory (created). Reusing it resumes the run.
      overrides: ``"section.key=value"`` strings applied on top of ``config``.
      strategy: a ``tf.distribute.Strategy`` to use instead of ``config.train.strategy``.

    Returns:
      The ``keras.callbacks.History`` of this process's ``fit``, with ``history.run_info``
      (the dict written to ``run_info.json``).

    Raises:
      ValueError: invalid config or data paths (message names the key).
    """
    if isinstance(config, str):
        config = load_config(config, overrides)
    elif isinstance(config, dict):
        from mnc_tf.training.config import apply_overrides

        config = ExperimentConfig.from_dict(apply_overrides(config, overrides))
    elif overrides:
        from mnc_tf.training.config import apply_overrides

        config = ExperimentConfig.from_dict(apply_overrides(config.to_dict(), overrides))
    if not isinstance(config, ExperimentConfig):
        raise ValueError(f"config must be an ExperimentConfig, path or dict, got {config!r}.")
    tcfg = config.train

    # 1. The strategy first (multi-worker must precede every other TF op).
    if strategy is None:
        strategy = strategy_lib.select_strategy(tcfg.strategy)
    import keras
    import tensorflow as tf

    from mnc_tf.training.best_model import BestModelCheckpoint, atomic_save_model
    from mnc_tf.training.checkpoints import (
        KILL_ENV,
        BackupAndRestore,
        KillDuringEvaluation,
        global_step,
        kill_when,
        remove_interrupted_writes,
    )
    from mnc_tf.training.resumable_input import ResumableInput
    from mnc_tf.training.summaries import TrainingSummaries

    chief = strategy_lib.is_chief(strategy)
    os.makedirs(model_dir, exist_ok=True)
    new_run = False
    if chief:
        remove_interrupted_writes(model_dir)
        new_run = _check_resume_config(model_dir, config)
    logger.info("strategy: %s", strategy_lib.describe(strategy))

    # 2. Precision and seeds. The policy is global Keras state: restore it when done.
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(tcfg.mixed_precision)
    keras.utils.set_random_seed(tcfg.seed)
    try:
        # 3. Data.
        mnc_cfg = config.mnc_config()
        splits = build_datasets(config, strategy, model_dir)
        global_batch = strategy_lib.global_batch_size(config.data.per_replica_batch_size, strategy)
        lr = mnc_cfg.optimizer.learning_rate
        if tcfg.scale_learning_rate:
            lr = strategy_lib.scaled_learning_rate(lr, global_batch, tcfg.reference_batch_size)
        logger.info(
            "global batch %d = %d per replica x %d replicas; learning rate %.6g (base %.6g at "
            "batch %d%s)",
            global_batch,
            config.data.per_replica_batch_size,
            strategy.num_replicas_in_sync,
            lr,
            mnc_cfg.optimizer.learning_rate,
            tcfg.reference_batch_size,
            ", linear scaling" if tcfg.scale_learning_rate else ", not scaled",
        )
        logger.info("training data: %d images, %s", splits.info.num_images, splits.info.report())

        # 4. Model.
        with strategy.scope():
            model = build_model(config, splits.info)
            model.compile(optimizer=build_optimizer(model, lr), jit_compile=False)
            model.optimizer.build(model.trainable_variables)
        if new_run:  # the config is valid: record it (a failed config leaves nothing behind)
            _write_config(model_dir, config)
        if not mnc_cfg.deterministic_sampling:
            logger.info(
                "model.deterministic_sampling is false: anchor/RoI sampling draws from the "
                "global RNG, so a resumed run will not reproduce an uninterrupted one exactly"
            )

        # 5. Callbacks (order matters: BackupAndRestore first so its epoch bookkeeping runs
        # before any callback that may stop training; evaluation before the consumers of its
        # metrics).
        total_steps = mnc_cfg.optimizer.total_steps
        spe = min(tcfg.steps_per_epoch, total_steps)
        epochs = math.ceil(total_steps / spe)
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        # fit reads an iterator made here, so that checkpoints can hold the input position.
        # (Not across workers: each reads its own shard, and only the chief's checkpoint is
        # kept, so the other workers' positions would be lost.)
        train_input = splits.train if multi_worker else ResumableInput(splits.train)
        save_position = not multi_worker and train_input.checkpointable
        if not save_position:
            logger.info(
                "the checkpoints do not hold the input pipeline's position with %s (its "
                "distributed iterator cannot be checkpointed): a resumed run restarts the data",
                type(strategy).__name__,
            )
        backup = BackupAndRestore(
            os.path.join(model_dir, "checkpoints"),
            save_freq=tcfg.checkpoint_every,
            delete_checkpoint=False,
            max_to_keep=tcfg.keep_checkpoints,
            steps_per_epoch=spe,
            total_steps=total_steps,
            iterator=train_input.iterator if save_position else None,
        )
        callbacks = [backup]
        evaluation = None
        if multi_worker and tcfg.eval_every_epochs and splits.val is not None:
            logger.info(
                "multi-worker run: evaluation during training is off (run mnc-eval on "
                "final.keras); best.keras follows the training loss"
            )
        else:
            evaluation = _evaluation_callback(config, splits, splits.val_annotations)
        if evaluation is not None:
            if os.environ.get(KILL_ENV):
                callbacks.append(KillDuringEvaluation())  # test hook
            callbacks.append(evaluation)
            monitor, mode = tcfg.best_metric, tcfg.best_mode
        else:
            monitor, mode = "loss", "min"
        callbacks.append(
            BestModelCheckpoint(os.path.join(model_dir, "best.keras"), monitor=monitor, mode=mode)
        )
        images, infos = (None, None)
        if chief:
            images, infos = _summary_images(splits, tcfg.tensorboard_images)
        callbacks.append(
            TrainingSummaries(
                os.path.join(model_dir, "logs"),
                log_every=tcfg.log_every,
                images=images,
                image_info=infos,
                class_names=splits.info.class_names,
            )
        )
        callbacks.append(keras.callbacks.TerminateOnNaN())
        # Keras' progress bar on a terminal; in a log, one line per train.log_every steps.
        from mnc_tf.training.progress import StepLogger, keras_verbosity

        verbose = keras_verbosity(tcfg.verbose)
        if not chief:
            verbose = 0
        elif verbose != 1 and tcfg.log_every:
            callbacks.append(StepLogger(tcfg.log_every, total_steps, global_batch, spe))

        if multi_worker:
            strategy_lib.patch_model_for_multi_worker(model)

        # 6. Fit.
        start = time.time()
        fitting = contextlib.nullcontext() if multi_worker else train_input.fitting(model)
        with fitting:
            history = model.fit(
                train_input,
                epochs=epochs,
                steps_per_epoch=spe,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # the input pipeline shuffles; Keras warns on shuffle=True
            )
        elapsed = time.time() - start
        step = global_step(model)
        run_info = {
            "strategy": strategy_lib.describe(strategy),
            "replicas": strategy.num_replicas_in_sync,
            "global_batch": global_batch,
            "learning_rate": lr,
            "base_learning_rate": mnc_cfg.optimizer.learning_rate,
            "total_steps": total_steps,
            "restored_step": backup.restored_step,
            "final_step": step,
            "steps_run": backup.steps_run,
            "fit_seconds": elapsed,
            "images_per_second": backup.steps_run * global_batch / elapsed if elapsed else None,
            "mixed_precision": tcfg.mixed_precision,
        }
        history.run_info = run_info
        if chief:
            atomic_save_model(model, os.path.join(model_dir, "final.keras"))
            history_file = os.path.join(model_dir, "history.json")
            if backup.steps_run or not os.path.isfile(history_file):
                _write_json(history_file, history.history)
            # else: nothing was trained (a finished run re-exported); keep the history.
            _write_json(os.path.join(model_dir, "run_info.json"), run_info)
            if tcfg.export_saved_model:  # last: the slowest write
                export_dir = os.path.join(model_dir, "export")
                kill_when("export", 1, os.path.join(export_dir, ".staging-*"))
                _export(model, export_dir)
        logger.info(
            "trained to step %d (%d steps in this process, %.1f s, %.2f images/s)",
            step,
            backup.steps_run,
            elapsed,
            run_info["images_per_second"] or 0.0,
        )
        return history
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _export(model, export_dir):
    """SavedModel for TF Serving at ``export_dir/1`` (replacing an older export of this run)."""
    from mnc_tf.export.serving import export_serving

    path = export_serving(model, export_dir, version=1, overwrite=True)
    logger.info("exported SavedModel to %s", path)
    return path


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`train`.

    ``from mnc_tf.training import train`` must give the function, but once this submodule has
    been imported Python sets the package attribute ``train`` to the *module* (the lazy export
    in ``mnc_tf/training/__init__.py`` is then bypassed). Calling the module calls the
    function, so both spellings work whatever was imported first.
    """

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
