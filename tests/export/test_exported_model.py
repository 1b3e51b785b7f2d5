"""An export used as a model: ``load_exported_model`` and ``mnc-eval --model export/``."""

import json

import numpy as np
import pytest
import tensorflow as tf
from export_testutil import CATEGORY_IDS, CLASS_NAMES, MAX_SIDE, SHORT_SIDE, scene

from mnc_tf.export import ExportedModel, load_exported_model


def _features():
    """Two resized images zero-padded to one batch, as the COCO pipeline makes them."""
    from mnc_tf.data.preprocess import resize_image

    images, infos = [], []
    for size, seed in (((40, 70), 11), ((60, 100), 12)):
        resized, info = resize_image(scene(*size, seed=seed), SHORT_SIDE, MAX_SIDE)
        images.append(resized.numpy())
        infos.append(info.numpy())
    height = max(i.shape[0] for i in images)
    width = max(i.shape[1] for i in images)
    batch = np.zeros((len(images), height, width, 3), np.float32)
    for k, image in enumerate(images):
        batch[k, : image.shape[0], : image.shape[1]] = image
    return {"images": batch.round().astype(np.uint8), "image_info": np.stack(infos)}


@pytest.mark.parametrize("version_dir", [False, True], ids=["export-root", "version-dir"])
def test_exported_model_matches_the_keras_model(tiny_model, export_base, version_dir):
    model = load_exported_model(export_base / "1" if version_dir else export_base)
    assert isinstance(model, ExportedModel)
    assert (model.config.input.short_side, model.config.input.max_side) == (SHORT_SIDE, MAX_SIDE)
    assert (model.preprocessing.short_side, model.preprocessing.max_side) == (SHORT_SIDE, MAX_SIDE)
    assert model.config.input.short_side == SHORT_SIDE
    assert model.config.postprocess.mask_threshold == tiny_model.config.postprocess.mask_threshold
    assert (
        model.config.postprocess.predict_score_threshold
        == tiny_model.config.postprocess.predict_score_threshold
    )
    assert model.class_names == CLASS_NAMES and model.category_ids == CATEGORY_IDS
    features = _features()
    out = {k: v.numpy() for k, v in model(features, training=False).items()}
    ref = tiny_model(
        {"images": tf.cast(features["images"], tf.float32), "image_info": features["image_info"]},
        training=False,
    )
    np.testing.assert_array_equal(out["num_detections"], ref["num_detections"].numpy())
    assert out["num_detections"].min() > 0
    for key, atol in (("boxes", 1e-3), ("scores", 1e-5), ("masks", 1e-4)):
        np.testing.assert_allclose(out[key], ref[key].numpy(), atol=atol, err_msg=key)
    np.testing.assert_array_equal(out["classes"], ref["classes"].numpy())  # contiguous labels


def test_load_exported_model_errors_name_the_path(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="no such file or directory: .*missing"):
        load_exported_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a SavedModel directory"):
        load_exported_model(tmp_path / "empty")
    # A SavedModel without the `infer` function (e.g. written by an older mnc-export).
    module = tf.Module()
    module.v = tf.Variable(1.0)
    fn = tf.function(lambda x: {"y": x * module.v}, input_signature=[tf.TensorSpec([None])])
    tf.saved_model.save(module, str(tmp_path / "other" / "3"), signatures=fn)
    with pytest.raises(ValueError, match=r"other/3 has no 'infer' function; re-export"):
        load_exported_model(tmp_path / "other")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from mnc_tf.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 4, seed=3, image_size=80)


def test_mnc_eval_accepts_an_export_root_or_a_version_dir(
    tiny_model, export_base, shapes, tmp_path
):
    from mnc_tf.cli import evaluate as evaluate_cli

    keras_file = tmp_path / "tiny.keras"
    tiny_model.save(keras_file)
    metrics = {}
    for name, model in (
        ("keras", keras_file),
        ("root", export_base),
        ("version", export_base / "1"),
    ):
        out = tmp_path / f"{name}.json"
        argv = ["--model", str(model), "--annotations", str(shapes.annotation_file),
                "--images", str(shapes.image_dir), "--out", str(out)]  # fmt: skip
        assert evaluate_cli.main(argv) == 0, name
        metrics[name] = json.loads(out.read_text())["metrics"]
    assert metrics["keras"], "mnc-eval wrote no metrics"
    for name in ("root", "version"):
        assert sorted(metrics[name]) == sorted(metrics["keras"])
        for key, value in metrics["keras"].items():
            if value is None:
                assert metrics[name][key] is None, key
            else:
                assert metrics[name][key] == pytest.approx(value, abs=1e-3), (name, key)


def test_mnc_eval_names_a_directory_that_is_no_export(shapes, tmp_path, capsys):
    from mnc_tf.cli import evaluate as evaluate_cli

    (tmp_path / "notes").mkdir()
    argv = ["--model", str(tmp_path / "notes"), "--annotations", str(shapes.annotation_file),
            "--images", str(shapes.image_dir)]  # fmt: skip
    assert evaluate_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--model:" in err and "notes: not a SavedModel directory" in err
    assert "Traceback" not in err
