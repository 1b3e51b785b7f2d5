"""evaluate_model, EvaluationCallback and mnc-eval with a fake model that returns
ground-truth-derived predictions in the docs/CONTRACTS.md format."""

import glob
import json
import logging
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from pycocotools.coco import COCO

from mnc_tf.cli import evaluate as cli
from mnc_tf.config import MNCConfig
from mnc_tf.data import coco_dataset, make_shapes_dataset
from mnc_tf.evaluation import COCOEvaluator, EvaluationCallback, VOCEvaluator, evaluate_model
from mnc_tf.preprocessing import Preprocessing

K = 8  # max_detections of the fake model
M = 64  # box-relative mask side
SHORT_SIDE = 128  # images are 96 px: scale 4/3, so a missing ÷ image_info shows


def _box_relative(mask, box, m=M):
    """GT mask → m×m grid on its box (cell centres sampled, nearest pixel)."""
    y1, x1, y2, x2 = box
    centres_y = y1 + (np.arange(m) + 0.5) * (y2 - y1) / m
    centres_x = x1 + (np.arange(m) + 0.5) * (x2 - x1) / m
    rows = np.clip(np.floor(centres_y).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(np.floor(centres_x).astype(int), 0, mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)].astype(np.float32)


class PerfectModel(keras.Model):
    """Looks up each image's ground truth by ``image_id`` and returns it as predictions.

    Boxes are turned into resized-image pixels with ``image_info[:, 2]``, as a real model's
    are; the evaluation code must map them back.
    """

    def __init__(self, annotation_file, category_ids, config=None, **kwargs):
        super().__init__(**kwargs)
        # What an MNC carries: the preprocessing its consumers must use (its Preprocessing
        # layer's resize sides, its config's mask threshold).
        self.config = config or MNCConfig(short_side=SHORT_SIDE, max_side=SHORT_SIDE)
        self.preprocessing = Preprocessing(self.config.input.short_side, self.config.input.max_side)
        self.num_classes = len(category_ids)
        self.seen_image_shapes = []
        coco = COCO(annotation_file)
        ids = sorted(coco.imgs)
        boxes = np.zeros((len(ids), K, 4), np.float32)
        classes = np.zeros((len(ids), K), np.int32)
        scores = np.zeros((len(ids), K), np.float32)
        masks = np.zeros((len(ids), K, M, M), np.float32)
        num = np.zeros(len(ids), np.int32)
        for i, image_id in enumerate(ids):
            anns = coco.imgToAnns[image_id][:K]
            num[i] = len(anns)
            for k, ann in enumerate(anns):
                x, y, w, h = ann["bbox"]
                boxes[i, k] = [y, x, y + h, x + w]
                classes[i, k] = category_ids.index(ann["category_id"]) + 1
                scores[i, k] = 0.9 - 0.1 * k
                masks[i, k] = _box_relative(coco.annToMask(ann), boxes[i, k])
        self.table_ids = tf.constant(ids, tf.int64)
        self.table = [tf.constant(t) for t in (boxes, classes, scores, masks, num)]

    def call(self, features, training=False):
        self.seen_image_shapes.append(tuple(features["images"].shape[1:3]))
        match = tf.equal(features["image_id"][:, None], self.table_ids[None, :])
        index = tf.argmax(tf.cast(match, tf.int32), axis=1)
        boxes, classes, scores, masks, num = [tf.gather(t, index) for t in self.table]
        scale = features["image_info"][:, 2]  # [B, 2] (sy, sx)
        boxes = boxes * tf.tile(scale, [1, 2])[:, None, :]
        return {
            "boxes": boxes,
            "scores": scores,
            "classes": classes,
            "masks": masks,
            "num_detections": num,
        }

    def train_step(self, data):  # fit() only drives the callback here
        return {"loss": tf.constant(0.0)}


@pytest.fixture(autouse=True)
def _restore_mnc_logging():
    """mnc-eval's main() configures the mnc_tf logger (no propagation): undo it per test."""
    root = logging.getLogger("mnc_tf")
    saved = (root.propagate, list(root.handlers), root.level)
    yield
    root.propagate, root.handlers[:], root.level = saved[0], saved[1], saved[2]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("ev"), 6, seed=2, image_size=96)


def _dataset(shapes):
    # batch 4 over 6 images: the last batch is partial
    return coco_dataset(
        shapes.annotation_file, shapes.image_dir, batch_size=4, short_side=SHORT_SIDE,
        max_side=SHORT_SIDE, max_instances=K,
    )  # fmt: skip


def _check_perfect(metrics):
    assert metrics["bbox/AP"] == pytest.approx(1.0)
    assert metrics["segm/AP50"] == pytest.approx(1.0)
    assert metrics["segm/AP75"] == pytest.approx(1.0)
    assert metrics["segm/AP"] > 0.9  # m×m resampling blurs a few edge pixels
    assert metrics["mAP_r@0.5"] == pytest.approx(1.0)
    assert metrics["mAP_r@0.7"] == pytest.approx(1.0)


def test_evaluate_model_with_perfect_predictions(shapes):
    ds = _dataset(shapes)
    model = PerfectModel(shapes.annotation_file, ds.info.category_ids)
    coco_ev = COCOEvaluator(shapes.annotation_file)
    voc_ev = VOCEvaluator(ds.info.num_classes)
    metrics = evaluate_model(model, ds, [coco_ev, voc_ev])
    _check_perfect(metrics)
    assert coco_ev._image_ids == set(range(1, 7))
    # a run limited to one batch evaluates just those 4 images, after a reset
    evaluate_model(model, ds, [coco_ev], max_batches=1)
    assert len(coco_ev._image_ids) == 4


def test_evaluate_model_rejects_mismatched_label_mapping(shapes):
    ds = _dataset(shapes)
    model = PerfectModel(shapes.annotation_file, ds.info.category_ids)
    with pytest.raises(ValueError, match="category_ids"):
        evaluate_model(model, ds, [COCOEvaluator(shapes.annotation_file, [7, 3, 1])])
    with pytest.raises(ValueError, match="evaluators"):
        evaluate_model(model, ds, [])


def test_callback_writes_history_and_tensorboard(shapes, tmp_path):
    ds = _dataset(shapes)
    model = PerfectModel(shapes.annotation_file, ds.info.category_ids)
    model.compile()
    callback = EvaluationCallback(
        ds,
        [COCOEvaluator(shapes.annotation_file), VOCEvaluator(3)],
        every_n_epochs=2,
        log_dir=str(tmp_path / "tb"),
        prefix="val_",
    )
    train = tf.data.Dataset.from_tensors((tf.zeros([1, 4]), tf.zeros([1]))).repeat(2)
    history = model.fit(train, epochs=4, callbacks=[callback], verbose=0, shuffle=False)
    # evaluated after epochs 2 and 4 only
    assert sorted(callback.results) == [1, 3]
    assert history.history["val_segm/AP50"] == pytest.approx([1.0, 1.0])
    assert history.history["val_mAP_r@0.7"] == pytest.approx([1.0, 1.0])
    assert len(history.history["loss"]) == 4
    events = glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    assert events
    scalars = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
                assert value.metadata.plugin_data.plugin_name == "scalars"
    assert scalars[("val_bbox/AP", 1)] == pytest.approx(1.0)
    assert ("val_mAP_r@0.5", 3) in scalars
    with pytest.raises(ValueError, match="every_n_epochs"):
        EvaluationCallback(ds, [], every_n_epochs=0)


def _placeholder_keras(path):
    with zipfile.ZipFile(path, "w") as z:  # passes the zip check; loading is replaced
        z.writestr("config.json", "{}")
    return path


def test_cli_prints_table_and_writes_json(shapes, tmp_path, monkeypatch, capsys):
    info = _dataset(shapes).info
    model = PerfectModel(shapes.annotation_file, info.category_ids)
    model_path = _placeholder_keras(tmp_path / "model.keras")
    monkeypatch.setattr(cli, "load_mnc_model", lambda path, flag: model)
    out = tmp_path / "metrics.json"
    results = tmp_path / "results.json"
    rc = cli.main(
        [
            "--model", str(model_path), "--annotations", shapes.annotation_file,
            "--images", shapes.image_dir, "--short-side", str(SHORT_SIDE),
            "--max-side", str(SHORT_SIDE), "--batch-size", "2", "--voc",
            "--out", str(out), "--results", str(results),
        ]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "segm/AP50" in printed and "mAP_r@0.5" in printed
    saved = json.loads(out.read_text())
    _check_perfect(saved["metrics"])
    assert saved["metrics"]["segm/APl"] is None  # NaN (no large object) -> null
    assert len(json.loads(results.read_text())) > 0


@pytest.mark.parametrize(
    "flags, expected_side",
    [([], 160), (["--short-side", "96", "--max-side", "96"], 96)],
)
def test_cli_resizes_as_the_model_was_trained_unless_told(
    shapes, tmp_path, monkeypatch, capsys, flags, expected_side
):
    """No 600/1000 default of its own: the model's short_side/max_side (flags override)."""
    info = _dataset(shapes).info
    config = MNCConfig(short_side=160, max_side=160, mask_binarize_threshold=0.4)
    model = PerfectModel(shapes.annotation_file, info.category_ids, config=config)
    monkeypatch.setattr(cli, "load_mnc_model", lambda path, flag: model)
    out = tmp_path / "metrics.json"
    argv = [
        "--model", str(_placeholder_keras(tmp_path / "m.keras")),
        "--annotations", shapes.annotation_file, "--images", shapes.image_dir,
        "--out", str(out), *flags,
    ]  # fmt: skip
    assert cli.main(argv) == 0
    # The 96 px shapes images reached the model resized to the expected side (padded to a
    # multiple of 32), and the JSON records the sizes used.
    assert set(model.seen_image_shapes) == {(expected_side, expected_side)}
    saved = json.loads(out.read_text())
    assert (saved["short_side"], saved["max_side"]) == (expected_side, expected_side)
    assert f"shorter side {expected_side} px" in capsys.readouterr().out


def test_evaluate_model_warns_when_the_dataset_resizes_unlike_the_model(shapes, caplog):
    ds = _dataset(shapes)  # resized to 128
    same = PerfectModel(shapes.annotation_file, ds.info.category_ids)
    with caplog.at_level(logging.WARNING, logger="mnc_tf.evaluation"):
        evaluate_model(same, ds, [COCOEvaluator(shapes.annotation_file)])
    assert "trained with short_side" not in caplog.text
    config = MNCConfig(short_side=600, max_side=1000, mask_binarize_threshold=0.4)
    other = PerfectModel(shapes.annotation_file, ds.info.category_ids, config=config)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mnc_tf.evaluation"):
        evaluate_model(other, ds, [COCOEvaluator(shapes.annotation_file)])
    warnings = [r for r in caplog.records if "trained with short_side=600" in r.getMessage()]
    assert len(warnings) == 1  # once per evaluation, not per batch
    assert "96x96 image to 128x128" in warnings[0].getMessage()


def test_evaluate_model_binarises_masks_at_the_models_threshold(shapes, monkeypatch):
    import mnc_tf.evaluation.evaluate as evaluate_lib

    seen = []
    original = evaluate_lib.outputs_to_original

    def spy(outputs, b, image_info, mask_threshold):
        seen.append(mask_threshold)
        return original(outputs, b, image_info, mask_threshold)

    monkeypatch.setattr(evaluate_lib, "outputs_to_original", spy)
    ds = _dataset(shapes)
    config = MNCConfig(short_side=SHORT_SIDE, max_side=SHORT_SIDE, mask_binarize_threshold=0.65)
    model = PerfectModel(shapes.annotation_file, ds.info.category_ids, config=config)
    evaluate_model(model, ds, [COCOEvaluator(shapes.annotation_file)])
    assert set(seen) == {0.65}
    seen.clear()
    evaluate_model(model, ds, [COCOEvaluator(shapes.annotation_file)], mask_threshold=0.3)
    assert set(seen) == {0.3}


def test_one_summary_table_per_evaluation_and_pycocotools_tables_at_debug(shapes, caplog):
    ds = _dataset(shapes)
    model = PerfectModel(shapes.annotation_file, ds.info.category_ids)
    with caplog.at_level(logging.DEBUG, logger="mnc_tf.evaluation"):
        evaluate_model(model, ds, [COCOEvaluator(shapes.annotation_file), VOCEvaluator(3)])
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1, info
    table = info[0].splitlines()
    assert table[0].startswith("evaluated 6 images in ")
    assert table[1].split() == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"]
    assert table[2].split()[:3] == ["bbox", "1.000", "1.000"]
    assert table[3].split()[0] == "segm"
    assert "mAP_r@0.5 1.000" in table[4]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    # pycocotools' own output (progress and 12-line tables) only at DEBUG
    assert any("Average Precision" in m and "DONE" in m for m in debug)
    assert not any("Average Precision" in m for m in info)


def test_cli_missing_files_give_a_message_and_exit_2(tmp_path, capsys, shapes):
    rc = cli.main(["--model", str(tmp_path / "nope.keras"), "--annotations", "x", "--images", "y"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--model: no such file" in err and "Traceback" not in err
    zipped = _placeholder_keras(tmp_path / "z.keras")
    rc = cli.main(
        ["--model", str(zipped), "--annotations", str(tmp_path / "a.json"), "--images", "y"]
    )
    assert rc == 2 and "--annotations: no such file" in capsys.readouterr().err
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    rc = cli.main(
        [
            "--model",
            str(model),
            "--annotations",
            shapes.annotation_file,
            "--images",
            shapes.image_dir,
        ]
    )
    assert rc == 2 and "--model: " in capsys.readouterr().err  # not a loadable model
    rc = cli.main(["--model", str(zipped), "--dataset", "voc", "--root", str(tmp_path / "r")])
    assert rc == 2 and "--root" in capsys.readouterr().err


def test_cli_reads_the_sizes_from_a_saved_mnc(shapes, tmp_path, capsys):
    """A real .keras file: mnc-eval takes short_side / max_side from the saved config."""
    import mnc_tf

    config = mnc_tf.MNCConfig.tiny_shapes(short_side=64, max_side=80, max_detections=10)
    info = _dataset(shapes).info
    model = mnc_tf.MNC(info.num_classes, backbone="tiny", num_stages=3, config=config)
    model.save(tmp_path / "tiny.keras")
    out = tmp_path / "metrics.json"
    argv = [
        "--model", str(tmp_path / "tiny.keras"), "--annotations", shapes.annotation_file,
        "--images", shapes.image_dir, "--max-images", "2", "--out", str(out),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    saved = json.loads(out.read_text())
    assert (saved["short_side"], saved["max_side"], saved["mask_threshold"]) == (64, 80, 0.4)
    assert "shorter side 64 px, longer side <= 80 px (as the model was trained)" in (
        capsys.readouterr().out
    )
