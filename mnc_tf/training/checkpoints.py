"""Fault tolerance: step checkpoints that resume exactly, and the cleanup of killed writes.

:class:`BackupAndRestore` is a ``keras.callbacks.BackupAndRestore`` (use it like one:
``BackupAndRestore(backup_dir, save_freq=N, delete_checkpoint=False)``) that fixes three things
Keras 3's own callback does not do:

* **Atomic saves.** Keras 3 overwrites ``latest.weights.h5`` in place, so a kill during a save
  leaves a truncated latest file (and a metadata JSON that may disagree with it). Here the
  storage is ``tf.train.CheckpointManager``: a checkpoint's data and index files are written
  under temporary names and renamed when complete, and only then is the ``checkpoint`` state
  file — the pointer to the latest checkpoint — replaced atomically (write-then-rename). A
  process killed at any moment leaves the pointer on the previous complete checkpoint. (This
  protects against a killed process, not against losing the machine's power: nothing is
  fsync'ed.) Should a listed checkpoint still be unreadable (e.g. deleted by hand), the restore
  falls back to the next older one and logs it.
* **Resume at the step, not the epoch.** The checkpoint holds the model, the optimizer and its
  ``iterations`` counter (the global step, which also drives the learning-rate schedule). A
  restart sets Keras's initial epoch to ``step // steps_per_epoch`` and ends that first epoch
  early, at the epoch boundary, so the run continues exactly from the saved step and performs
  ``total_steps`` optimizer steps in all — not the Keras 3 behaviour of replaying the whole
  interrupted epoch on top of mid-epoch weights.
* **The input pipeline's position.** Given ``iterator=`` (the ``tf.data`` iterator that
  ``fit`` consumes, see :mod:`mnc_tf.training.resumable_input`), each checkpoint also holds
  the iterator's state — shuffle order, the random stream of the augmentations, the epoch it
  is in, buffered elements — so a resumed run sees exactly the batches the uninterrupted run
  would have seen. Keras 3's own callback restores the weights only and ``fit`` restarts the
  data from its seeded beginning, so a resumed run trains on other batches.
* **Multi-worker.** Every worker takes part in each save (TF's rule), but only the chief writes
  to ``backup_dir``; the others write to scratch directories that are removed right away.

Interrupted saves leave ``ckpt-<step>_temp/`` folders (TensorFlow's staging of a checkpoint's
shards) and ``.scratch/``; :func:`remove_interrupted_writes` deletes them when a run starts.

Checkpoint files: ``backup_dir/ckpt-<step>.index`` / ``.data-*`` and ``backup_dir/checkpoint``;
``tf.train.latest_checkpoint(backup_dir)`` finds the newest and ``tf.train.Checkpoint(model=m,
optimizer=m.optimizer).restore(path)`` loads it outside training.

The rest of a run's fault tolerance: :mod:`mnc_tf.training.resumable_input` (the ``fit`` input
whose position the checkpoints hold), :mod:`mnc_tf.training.best_model` (``best.keras`` and
``final.keras``, atomically), :mod:`mnc_tf.io_utils` (atomic JSON / YAML writes).
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import signal
import threading
import time
import uuid

import keras
import tensorflow as tf

from mnc_tf.training import strategy as strategy_lib

logger = logging.getLogger("mnc_tf.training")


def global_step(model: keras.Model) -> int:
    """The optimizer's iteration counter (number of applied updates) as a Python int."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


# ---------------------------------------------------------------------------------- test hook
# A kill at a chosen point, for the tests that SIGKILL a real training process and resume it.
# MNC_TRAIN_TEST_KILL="<point>:<n>": ``step:N`` right after optimizer step N; ``checkpoint:N``
# while checkpoint N is being written (as soon as its ``ckpt-N_temp`` staging folder exists);
# ``eval:E`` while the evaluation after epoch E (1-based) runs; ``export:1`` while the
# SavedModel is being staged. Unset (always, outside those tests): no effect.
KILL_ENV = "MNC_TRAIN_TEST_KILL"


def _kill_spec():
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return None, None
    point, _, n = spec.partition(":")
    return point, int(n or 0)


def _sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_if(point, n):
    """Test hook: SIGKILL this process now if ``MNC_TRAIN_TEST_KILL`` is ``point:n``."""
    if _kill_spec() == (point, n):
        logger.info("test hook %s=%s:%d: killing this process", KILL_ENV, point, n)
        _sigkill()


def kill_when(point, n, pattern=None, delay=0.0):
    """Test hook: if ``MNC_TRAIN_TEST_KILL`` is ``point:n``, SIGKILL this process from a
    thread as soon as a path matching ``pattern`` exists (or after ``delay`` seconds)."""
    if _kill_spec() != (point, n):
        return

    def watch():
        deadline = time.monotonic() + 60.0
        if delay:
            time.sleep(delay)
        while pattern and not glob.glob(pattern) and time.monotonic() < deadline:
            time.sleep(0.0002)
        _sigkill()

    threading.Thread(target=watch, daemon=True).start()


class KillDuringEvaluation(keras.callbacks.Callback):
    """Test hook (``MNC_TRAIN_TEST_KILL=eval:E``): SIGKILL 0.2 s into the evaluation after
    epoch E. ``train()`` puts it right before the evaluation callback when the variable is set.
    """

    def on_epoch_end(self, epoch, logs=None):
        kill_when("eval", epoch + 1, delay=0.2)


# ---------------------------------------------------------------------------------- callbacks
class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Checkpoint every ``save_freq`` steps; restore the latest on ``fit`` start (see module doc).

    Args:
      backup_dir: directory of the checkpoints (created if missing). Reuse the same directory
        — i.e. run the same command — to resume.
      save_freq: an int N (save when the global step is a multiple of N, so a resumed run saves
        at the same steps as an uninterrupted one) or ``"epoch"``.
      delete_checkpoint: delete ``backup_dir`` when ``fit`` ends (Keras's default ``True``;
        training scripts pass ``False`` to keep the checkpoints).
      max_to_keep: how many checkpoints to keep (older ones are deleted after a new one is
        complete).
      steps_per_epoch: the ``steps_per_epoch`` given to ``fit``; needed to resume mid-epoch
        (``None``: resume at the start of the epoch that contains the saved step).
      total_steps: stop ``fit`` once the global step reaches this (``None``: no limit).
      iterator: the iterator ``fit`` reads (:attr:`ResumableInput.iterator`); saved and
        restored with the model so that a resumed run continues the data where it stopped.
        ``None``: weights, optimizer and step only (the data restarts from its beginning).
    """

    def __init__(
        self,
        backup_dir,
        save_freq="epoch",
        double_checkpoint=False,
        delete_checkpoint=True,
        max_to_keep=3,
        steps_per_epoch=None,
        total_steps=None,
        iterator=None,
    ):
        # Absolute: the state file's entries are joined to it (a relative run directory
        # would be prefixed twice).
        super().__init__(
            os.path.abspath(os.fspath(backup_dir)),
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )
        if isinstance(save_freq, int) and save_freq < 1:
            raise ValueError(f"save_freq must be >= 1 or 'epoch', got {save_freq}.")
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}.")
        self.max_to_keep = int(max_to_keep)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.iterator = iterator
        self.restored_input_position = False  # the restored checkpoint held the iterator
        self.restored_step = None  # global step restored at fit start (None: fresh start)
        self.restored_path = None
        self.steps_run = 0  # optimizer steps taken in this process
        self._manager = None
        self._checkpoint = None
        self._chief = True
        self._last_saved_step = None
        self._epoch_end_step = None  # stop the first (partial) epoch here after a resume
        self._stopped_partial_epoch = False

    # ------------------------------------------------------------------ storage
    def _ensure_checkpoint(self):
        if self._checkpoint is None:
            parts = {"model": self.model, "optimizer": self.model.optimizer}
            if self.iterator is not None:
                parts["iterator"] = self.iterator
            self._checkpoint = tf.train.Checkpoint(**parts)
            self._chief = strategy_lib.is_chief(self.model.distribute_strategy)
        return self._checkpoint

    def _save_model(self):
        checkpoint = self._ensure_checkpoint()
        step = global_step(self.model)
        if step == self._last_saved_step:
            return
        if self._chief:
            if self._manager is None:
                os.makedirs(self.backup_dir, exist_ok=True)
                self._manager = tf.train.CheckpointManager(
                    checkpoint,
                    self.backup_dir,
                    max_to_keep=self.max_to_keep,
                    checkpoint_name="ckpt",
                )
            kill_when("checkpoint", step, os.path.join(self.backup_dir, f"ckpt-{step}_temp"))
            path = self._manager.save(checkpoint_number=step)
            logger.info("saved checkpoint %s", path)
        else:
            # Every worker must take part in a save (TF's multi-worker rule), but only the
            # chief's copy is kept.
            scratch_root = os.path.join(self.backup_dir, ".scratch")
            worker = strategy_lib.worker_id(self.model.distribute_strategy)
            scratch = os.path.join(scratch_root, f"{worker}-{uuid.uuid4().hex}")
            os.makedirs(scratch, exist_ok=True)
            try:
                tf.train.CheckpointManager(checkpoint, scratch, max_to_keep=1).save(step)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
                try:
                    os.rmdir(scratch_root)
                except OSError:
                    pass  # another worker's scratch is in use
        self._last_saved_step = step

    def _candidates(self):
        """Checkpoint prefixes in ``backup_dir``, newest first (state file, then a scan)."""
        paths = []
        state = tf.train.get_checkpoint_state(self.backup_dir)
        if state is not None:
            paths.extend(reversed(list(state.all_model_checkpoint_paths)))
            if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
                paths.insert(0, state.model_checkpoint_path)
        # Complete checkpoints the state file does not list (never the case for ours, but a
        # hand-edited directory should still resume).
        if os.path.isdir(self.backup_dir):
            for name in os.listdir(self.backup_dir):
                if name.startswith("ckpt-") and name.endswith(".index"):
                    p = os.path.join(self.backup_dir, name[: -len(".index")])
                    if p not in paths and os.path.abspath(p) not in map(os.path.abspath, paths):
                        paths.append(p)

        def step_of(p):
            try:
                return int(os.path.basename(p).rsplit("-", 1)[1])
            except (IndexError, ValueError):
                return -1

        paths = [p if os.path.isabs(p) else os.path.join(self.backup_dir, p) for p in paths]
        return sorted(dict.fromkeys(paths), key=step_of, reverse=True)

    def _load_model(self):
        if not self.model.built:
            raise ValueError(
                "BackupAndRestore needs a built model: call the model on a batch (or build it) "
                "before fit()."
            )
        if self.model.optimizer is not None and not self.model.optimizer.built:
            # Slot variables must exist so that they are restored now, not lazily.
            with self.model.distribute_strategy.scope():
                self.model.optimizer.build(self.model.trainable_variables)
        checkpoint = self._ensure_checkpoint()
        last_error = None
        for path in self._candidates():
            try:
                checkpoint.restore(path).assert_existing_objects_matched()
            # The TF reader reports damage in many ways (OpError "file is too short to be an
            # sstable", DataLossError, IndexError "Read less bytes than requested", ...): any
            # failure means "try the next older checkpoint"; each one is logged.
            except Exception as e:  # noqa: BLE001
                logger.warning("checkpoint %s is unreadable (%s); trying an older one", path, e)
                last_error = e
                continue
            self.restored_path = path
            self.restored_step = global_step(self.model)
            self._last_saved_step = self.restored_step
            self.restored_input_position = self.iterator is not None and any(
                name.startswith("iterator/")
                for name in tf.train.load_checkpoint(path).get_variable_to_shape_map()
            )
            logger.info(
                "restored checkpoint %s (step %d%s)",
                path,
                self.restored_step,
                ", input pipeline position included" if self.restored_input_position else "",
            )
            if self.iterator is not None and not self.restored_input_position:
                logger.warning(
                    "checkpoint %s holds no input-pipeline position (written without it): "
                    "the data restarts from its beginning, so this run will not reproduce an "
                    "uninterrupted one",
                    path,
                )
            return
        if last_error is not None:
            raise RuntimeError(
                f"None of the checkpoints in {self.backup_dir} could be restored (last error: "
                f"{last_error}); move the directory away to start from scratch."
            ) from last_error

    # ------------------------------------------------------------------ fit hooks
    def on_train_begin(self, logs=None):
        self._load_model()
        self.steps_run = 0
        step = self.restored_step or 0
        if self.steps_per_epoch:
            epoch = step // self.steps_per_epoch
            if step:
                self.model._initial_epoch = epoch  # what Keras's own callback sets
            if step % self.steps_per_epoch:
                self._epoch_end_step = (epoch + 1) * self.steps_per_epoch
        if self.total_steps is not None and step >= self.total_steps and self.steps_per_epoch:
            # Already finished: start past the last epoch so fit() runs no step at all.
            self.model._initial_epoch = math.ceil(self.total_steps / self.steps_per_epoch)

    def on_train_batch_end(self, batch, logs=None):
        step = global_step(self.model)
        self.steps_run += 1
        kill_if("step", step)
        if isinstance(self.save_freq, int) and step % self.save_freq == 0:
            self._save_model()
        if self.total_steps is not None and step >= self.total_steps:
            self.model.stop_training = True
        elif self._epoch_end_step is not None and step >= self._epoch_end_step:
            # Keras runs the resumed epoch for a full steps_per_epoch; end it at its boundary.
            self._epoch_end_step = None
            self._stopped_partial_epoch = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self._stopped_partial_epoch:
            # Only this callback asked to stop: keep training with the next epoch. (It runs
            # first among the callbacks, so later ones may still stop training.)
            self._stopped_partial_epoch = False
            self.model.stop_training = False
        if self.save_freq == "epoch":
            self._save_model()

    def on_train_end(self, logs=None):
        self._save_model()
        self.model._initial_epoch = None  # do not leak the resume point into a later fit()
        if self.delete_checkpoint and self._chief and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def remove_interrupted_writes(model_dir) -> list[str]:
    """Delete what killed writes leave in a run directory; returns the removed paths.

    ``checkpoints/ckpt-<step>_temp/`` (a checkpoint's shards staged by TensorFlow before they
    are merged under the final name), ``checkpoints/.scratch/`` (non-chief workers' saves),
    ``export/.staging-*`` (a SavedModel being written), and the ``<name>.tmp-*`` files of
    :mod:`mnc_tf.io_utils`' atomic writes (``.keras`` models, JSON, ``config.yaml``). None of
    them is ever read: complete writes are renamed into place. Call once at the start of a
    run, before anything writes.
    """
    patterns = [
        ("checkpoints", "ckpt-*_temp"),
        ("checkpoints", ".scratch"),
        ("checkpoints", "checkpoint.tmp*"),
        ("export", ".staging-*"),
        (".tmp-*.keras",),  # an earlier version's temporary .keras name
        ("*.tmp-*",),
        ("*.json.tmp",),  # an earlier version's temporary best.keras.json name
    ]
    removed = []
    for parts in patterns:
        for path in sorted(glob.glob(os.path.join(model_dir, *parts))):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    continue
            removed.append(path)
    if removed:
        logger.info(
            "removed %d leftover(s) of interrupted writes: %s",
            len(removed),
            ", ".join(os.path.relpath(p, model_dir) for p in removed),
        )
    return removed


def latest_step(backup_dir) -> int | None:
    """Global step of the latest checkpoint in ``backup_dir`` (from its file name), or None."""
    path = tf.train.latest_checkpoint(backup_dir)
    if path is None:
        return None
    return int(os.path.basename(path).rsplit("-", 1)[1])
