"""Checkpoints: exact resume at the step, unreadable checkpoints skipped, atomic best model."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from training_testutil import TINY_MODEL

from mnc_tf.data import coco_dataset, make_shapes_dataset
from mnc_tf.modeling.mnc import MNC
from mnc_tf.training.best_model import BestModelCheckpoint
from mnc_tf.training.checkpoints import BackupAndRestore, global_step, latest_step

TOTAL, PER_EPOCH, SAVE_EVERY, CRASH_AT = 7, 3, 2, 5


class Crash(Exception):
    pass


class CrashAt(keras.callbacks.Callback):
    """Raise after the optimizer step ``step`` (like a process dying mid-epoch)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if global_step(self.model) == self.step:
            raise Crash()


def _model(num_classes, seed):
    keras.utils.set_random_seed(seed)
    cfg = dict(TINY_MODEL, total_steps=TOTAL)
    backbone, stages = cfg.pop("backbone"), cfg.pop("num_stages")
    model = MNC(num_classes, backbone=backbone, num_stages=stages, config=cfg)
    model.compile()  # SGD, momentum 0.9, weight decay, step schedule over TOTAL steps
    model.optimizer.build(model.trainable_variables)
    return model


def _fit(model, data, backup_dir, extra=()):
    backup = BackupAndRestore(
        str(backup_dir),
        save_freq=SAVE_EVERY,
        delete_checkpoint=False,
        steps_per_epoch=PER_EPOCH,
        total_steps=TOTAL,
    )
    history = model.fit(
        data,
        epochs=-(-TOTAL // PER_EPOCH),
        steps_per_epoch=PER_EPOCH,
        callbacks=[backup, *extra],
        verbose=0,
    )
    return backup, history


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and a run that crashes after step 5 and is resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    shapes = make_shapes_dataset(
        tmp / "shapes", 2, seed=1, image_size=64, num_classes=2, max_shapes=2, split="train"
    )
    ds = coco_dataset(
        shapes.annotation_file,
        shapes.image_dir,
        batch_size=2,
        short_side=64,
        max_side=64,
        max_instances=4,
    )
    # One fixed batch, so that the data a resumed run sees does not depend on where the input
    # pipeline restarts; sampling is deterministic (seeded by step and image id).
    data = tf.data.Dataset.from_tensors(next(iter(ds))).repeat()

    straight = _model(2, seed=0)
    initial = straight.get_weights()
    _, straight_history = _fit(straight, data, tmp / "straight")

    crashed = _model(2, seed=0)
    with pytest.raises(Crash):
        _fit(crashed, data, tmp / "crashed", [CrashAt(CRASH_AT)])
    saved_after_crash = latest_step(tmp / "crashed")

    resumed = _model(2, seed=123)  # different initial weights: the restore must replace them
    backup, resumed_history = _fit(resumed, data, tmp / "crashed")
    keras.backend.clear_session()
    return {
        "tmp": tmp,
        "initial": initial,
        "straight": straight.get_weights(),
        "straight_steps": global_step(straight),
        "straight_epochs": len(straight_history.history["loss"]),
        "saved_after_crash": saved_after_crash,
        "resumed": resumed.get_weights(),
        "resumed_steps": global_step(resumed),
        "resumed_epochs": len(resumed_history.history["loss"]),
        "backup": backup,
        "num_classes": 2,
    }


def test_resume_continues_from_the_saved_step(runs):
    assert runs["saved_after_crash"] == 4  # checkpoints at steps 2 and 4; crash after 5
    backup = runs["backup"]
    assert backup.restored_step == 4
    assert backup.restored_path.endswith("ckpt-4")
    assert backup.steps_run == TOTAL - 4  # steps 5, 6, 7 — not a replay of the whole epoch
    assert runs["resumed_steps"] == runs["straight_steps"] == TOTAL
    # Epochs 2 (partial: step 6 ends it) and 3 ran after the resume; 3 in the straight run.
    assert runs["straight_epochs"] == 3 and runs["resumed_epochs"] == 2


def test_resumed_weights_equal_an_uninterrupted_run(runs):
    # Model, optimizer slots (momentum) and the step counter (lr schedule, sampling seeds) are
    # all restored: the resumed run ends where the uninterrupted one does. Tolerance: float32
    # round-off of identical computations (< 1e-6; the training moved weights by > 1e-3).
    moved = max(
        float(np.max(np.abs(a - b))) for a, b in zip(runs["straight"], runs["initial"], strict=True)
    )
    assert moved > 1e-3
    for a, b in zip(runs["straight"], runs["resumed"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_every_kept_checkpoint_is_readable(runs):
    directory = runs["tmp"] / "crashed"
    state = tf.train.get_checkpoint_state(str(directory))
    assert os.path.basename(state.model_checkpoint_path) == f"ckpt-{TOTAL}"
    for path in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(path)
        names = reader.get_variable_to_shape_map()
        assert len(names) > 30
        for name in names:
            reader.get_tensor(name)  # raises on a truncated or missing shard
        step = [n for n in names if n.startswith("optimizer/_iterations")]
        assert int(reader.get_tensor(step[0])) == int(path.rsplit("-", 1)[1])


def _restore_into_fresh_model(directory, num_classes):
    model = _model(num_classes, seed=5)
    callback = BackupAndRestore(str(directory), save_freq=SAVE_EVERY, steps_per_epoch=PER_EPOCH)
    callback.set_model(model)
    callback.on_train_begin()
    return callback, model


def test_unreadable_latest_falls_back_to_the_previous(runs, tmp_path, caplog):
    import shutil

    directory = tmp_path / "ckpts"
    shutil.copytree(runs["tmp"] / "crashed", directory)
    latest = tf.train.latest_checkpoint(str(directory))
    step = int(latest.rsplit("-", 1)[1])
    data_file = f"{latest}.data-00000-of-00001"
    with open(data_file, "r+b") as f:  # truncate the latest's data (disk trouble, not a kill)
        f.truncate(os.path.getsize(data_file) // 3)
    # A save that a kill interrupted leaves files that no state entry points to.
    (directory / "ckpt-99.index").write_bytes(b"partial")
    (directory / "ckpt-99_temp").mkdir()
    with caplog.at_level("WARNING", logger="mnc_tf.training"):
        callback, model = _restore_into_fresh_model(directory, runs["num_classes"])
    previous = max(s for s in (2, 4, 6, 7) if s < step)
    assert callback.restored_step == previous == global_step(model)
    assert "ckpt-99 is unreadable" in caplog.text and f"ckpt-{step} is unreadable" in caplog.text
    keras.backend.clear_session()


def test_no_readable_checkpoint_is_an_error(tmp_path):
    (tmp_path / "ckpt-3.index").write_bytes(b"garbage")
    (tmp_path / "ckpt-3.data-00000-of-00001").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="None of the checkpoints"):
        _restore_into_fresh_model(tmp_path, 2)


def test_fresh_directory_starts_at_step_zero(tmp_path):
    callback, model = _restore_into_fresh_model(tmp_path / "new", 2)
    assert callback.restored_step is None and global_step(model) == 0


def test_best_model_saved_only_on_improvement(tmp_path):
    model = _model(2, seed=0)
    path = tmp_path / "best.keras"
    best = BestModelCheckpoint(str(path), monitor="mAP_r@0.5", mode="max")
    best.set_model(model)
    saves = []
    for epoch, value in enumerate([0.5, 0.4, float("nan"), 0.7, 0.69]):
        before = os.path.getmtime(path) if path.exists() else None
        best.on_epoch_end(epoch, {"mAP_r@0.5": value, "loss": 1.0})
        after = os.path.getmtime(path) if path.exists() else None
        saves.append(after is not None and after != before)
    assert saves == [True, False, False, True, False]
    meta = json.loads((tmp_path / "best.keras.json").read_text())
    assert meta["value"] == pytest.approx(0.7) and meta["epoch"] == 4
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "best.keras.json"]  # no temp files
    loaded = keras.models.load_model(str(path))
    assert isinstance(loaded, MNC)
    # A resumed run must beat the best so far, not start over.
    again = BestModelCheckpoint(str(path), monitor="mAP_r@0.5", mode="max")
    assert again.best == pytest.approx(0.7)
    with pytest.raises(ValueError, match=r"\.keras"):
        BestModelCheckpoint(str(tmp_path / "best.h5"))


def test_save_freq_is_validated(tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        BackupAndRestore(str(tmp_path), save_freq=0)
    with pytest.raises(ValueError, match="save_freq"):
        BackupAndRestore(str(tmp_path), save_freq="hourly")


def test_resume_with_the_input_position_is_exact_and_without_it_is_not(tmp_path):
    """Several shuffled, flipped batches per pass: the checkpointed iterator makes a crashed and
    resumed fit equal to an uninterrupted one bit for bit; without it (Keras' own behaviour:
    the data restarts from its seeded beginning) the weights differ."""
    import shutil

    from mnc_tf.training.resumable_input import ResumableInput, without_external_state_check

    shapes = make_shapes_dataset(
        tmp_path / "shapes", 6, seed=2, image_size=64, num_classes=2, max_shapes=2, split="train"
    )

    def data():
        ds = coco_dataset(
            shapes.annotation_file,
            shapes.image_dir,
            batch_size=2,
            training=True,  # shuffled every pass
            flip=True,
            short_side=64,
            max_side=64,
            max_instances=4,
            repeat=True,
            seed=3,
        )
        return ResumableInput(without_external_state_check(ds))

    def fit(model, directory, with_position, extra=()):
        source = data()
        backup = BackupAndRestore(
            str(directory),
            save_freq=SAVE_EVERY,
            delete_checkpoint=False,
            steps_per_epoch=PER_EPOCH,
            total_steps=TOTAL,
            iterator=source.iterator if with_position else None,
        )
        with source.fitting(model):
            model.fit(
                source,
                epochs=-(-TOTAL // PER_EPOCH),
                steps_per_epoch=PER_EPOCH,
                callbacks=[backup, *extra],
                verbose=0,
            )
        return backup

    straight = _model(2, seed=0)
    fit(straight, tmp_path / "straight", True)
    expected = straight.get_weights()
    crashed = _model(2, seed=0)
    with pytest.raises(Crash):
        fit(crashed, tmp_path / "crashed", True, [CrashAt(CRASH_AT)])
    shutil.copytree(tmp_path / "crashed", tmp_path / "crashed_copy")
    for with_position, directory in ((True, "crashed"), (False, "crashed_copy")):
        resumed = _model(2, seed=7)
        backup = fit(resumed, tmp_path / directory, with_position)
        assert backup.restored_step == 4 and backup.restored_input_position == with_position
        same = [np.array_equal(a, b) for a, b in zip(expected, resumed.get_weights(), strict=True)]
        if with_position:
            assert all(same)
        else:
            assert sum(same) < len(same) // 2, "the data did not matter: the test proves nothing"


def test_fit_under_a_strategy_reads_exactly_its_steps_from_the_resumable_input(tmp_path):
    """Under a strategy scope Keras' fit first takes a batch to build the model; with
    ResumableInput.fitting that batch comes from a separate iterator, so the checkpointed one
    advances by exactly the steps trained."""
    from mnc_tf.training.resumable_input import ResumableInput

    shapes = make_shapes_dataset(
        tmp_path / "shapes", 4, seed=4, image_size=64, num_classes=2, max_shapes=2, split="train"
    )

    def dataset():  # a new dataset object each time: the same seeded order from its start
        return coco_dataset(
            shapes.annotation_file,
            shapes.image_dir,
            batch_size=1,
            training=True,
            short_side=64,
            max_side=64,
            max_instances=4,
            repeat=True,
            seed=5,
        )

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = _model(2, seed=0)
    assert model._distribute_strategy is not None  # the case where Keras takes a batch
    source = ResumableInput(dataset())
    with source.fitting(model):
        model.fit(source, epochs=1, steps_per_epoch=2, verbose=0)
    assert "_maybe_symbolic_build" not in model.__dict__  # the patch is undone
    expected = [int(f["image_id"][0]) for f, _ in dataset().take(3)]
    assert int(next(source.iterator)[0]["image_id"][0]) == expected[2]
