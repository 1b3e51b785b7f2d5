"""Predictions drawn or written by our tools use the model's score threshold by default
(``MNCConfig.postprocess.predict_score_threshold``, 0.5); ``--threshold`` overrides it."""

import json

import numpy as np
import pytest
from PIL import Image

import mnc_tf
from mnc_tf import visualize
from mnc_tf.cli import predict as predict_cli


def test_config_default_and_range():
    assert mnc_tf.MNCConfig().postprocess.predict_score_threshold == 0.5
    with pytest.raises(ValueError, match="predict_score_threshold must be in \\[0, 1\\], got 1.5"):
        mnc_tf.MNCConfig(predict_score_threshold=1.5)


def test_draw_instances_skips_low_scores_by_default():
    image = np.full((64, 96, 3), 100, np.uint8)
    boxes = np.array([[8, 10, 40, 50], [30, 60, 60, 90]], np.float32)
    masks = np.zeros((2, 64, 96), np.uint8)
    masks[0, 12:36, 14:46] = 1
    masks[1, 34:56, 64:86] = 1
    classes, scores = [1, 2], [0.9, 0.3]
    default = visualize.draw_instances(image, boxes, masks, classes, scores)
    only_confident = visualize.draw_instances(image, boxes[:1], masks[:1], [1], [0.9])
    np.testing.assert_array_equal(default, only_confident)
    everything = visualize.draw_instances(image, boxes, masks, classes, scores, score_threshold=0)
    assert not np.array_equal(everything, default)
    assert (everything[40:50, 70:80] != image[40:50, 70:80]).any()  # the 0.3 instance drawn


def _predict(root, photo, model_path, out_name, *flags):
    out = root / out_name
    argv = [str(photo), "--model", str(model_path), "--out", str(out), *flags]
    assert predict_cli.main(argv) == 0
    return np.array([r["score"] for r in json.loads((out / "results.json").read_text())])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same weights saved with predict_score_threshold 0 ("all") and with a threshold
    between two of the scores mnc-predict writes for the photo ("cut")."""
    import keras

    root = tmp_path_factory.mktemp("thr")
    keras.utils.set_random_seed(1)
    config = mnc_tf.MNCConfig.tiny_shapes(
        short_side=64, max_side=64, max_detections=20, predict_score_threshold=0.0
    )
    model = mnc_tf.MNC(3, backbone="tiny", num_stages=3, config=config)
    rng = np.random.default_rng(4)
    photo = root / "photo.png"
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(photo)
    model.save(root / "all.keras")
    scores = _predict(root, photo, root / "all.keras", "all")  # threshold 0: every detection
    distinct = np.unique(scores)
    assert len(distinct) >= 4, "the untrained model needs a few detections for this test"
    k = len(distinct) // 2
    threshold = float(distinct[k - 1] + distinct[k]) / 2
    cut = mnc_tf.MNC.from_config(
        dict(model.get_config(), config=model.config.replace(predict_score_threshold=threshold))
    )
    cut.set_weights(model.get_weights())
    cut.save(root / "cut.keras")
    expected = int(np.sum(scores >= threshold))
    assert 0 < expected < len(scores)
    from mnc_tf.export import export_serving

    export_serving(cut, root / "export", version=1)
    return {"root": root, "photo": photo, "scores": scores, "threshold": threshold, "cut": cut}


def test_mnc_predict_threshold_defaults_to_the_models(models):
    root, photo, scores, threshold = (models[k] for k in ("root", "photo", "scores", "threshold"))
    written = _predict(root, photo, root / "cut.keras", "cut")
    assert len(written) == int(np.sum(scores >= threshold))
    assert written.min() >= threshold
    # --threshold overrides the model's.
    override = _predict(root, photo, root / "cut.keras", "override", "--threshold", "0")
    assert len(override) == len(scores)


def test_exported_model_carries_its_threshold(models):
    from mnc_tf.export.predictor import Predictor

    root = models["root"]
    predictor = Predictor.from_path(root / "export")
    assert predictor.score_threshold == pytest.approx(models["threshold"])
    written = _predict(root, models["photo"], root / "export", "from_export")
    assert len(written) == int(np.sum(models["scores"] >= models["threshold"]))


def test_docs_serving_notebook_snippet_draws_only_confident_instances(models, monkeypatch):
    """The docs/serving.md notebook snippet, run as written on an export and a photo."""
    import os
    import re

    from mnc_tf.export.predictor import Predictor

    root = models["root"]
    docs = open(os.path.join(os.path.dirname(__file__), "..", "docs", "serving.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", docs, re.S)
    snippet = [b for b in blocks if 'Predictor.from_path("export/")' in b and "draw_instances" in b]
    assert len(snippet) == 1
    work = root / "snippet"
    (work / "export").mkdir(parents=True)
    os.symlink(root / "export" / "1", work / "export" / "1")
    (work / "cat.jpg").write_bytes(models["photo"].read_bytes())  # a PNG; decode_image reads it
    monkeypatch.chdir(work)
    exec(compile(snippet[0], "docs/serving.md", "exec"), {})
    drawn = np.asarray(Image.open(work / "cat_pred.png"))
    # The same detections drawn at the model's threshold, and all of them: the snippet drew
    # the former.
    predictor = Predictor.from_path(work / "export")
    det = predictor.predict(models["photo"].read_bytes())
    image = visualize.load_image(str(models["photo"]))
    args = [image, det["detection_boxes"], det["detection_masks"], det["detection_classes"]]
    args += [det["detection_scores"]]
    expected = visualize.draw_instances(
        *args, class_names=predictor.labels, score_threshold=models["threshold"]
    )
    everything = visualize.draw_instances(*args, class_names=predictor.labels, score_threshold=0)
    np.testing.assert_array_equal(drawn, expected)
    assert not np.array_equal(drawn, everything)
