"""mnc-predict and mnc-export command lines."""

import json

import numpy as np
import pytest
from export_testutil import CATEGORY_IDS, scene
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mnc_tf.cli import export as export_cli
from mnc_tf.cli import predict as predict_cli


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    jpeg = folder / "street.jpg"
    Image.fromarray(scene(72, 120, seed=21)).save(jpeg, quality=95)
    png = folder / "000000000042.png"
    Image.fromarray(scene(100, 60, seed=22)).save(png)
    return [jpeg, png]


@pytest.fixture(scope="module")
def keras_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny_model.save(path)
    return path


def _check_outputs(out_dir, images, min_score):
    """PNG per image at the image's size; results.json loads with COCO.loadRes."""
    for path in images:
        with Image.open(path) as original, Image.open(out_dir / f"{path.stem}.png") as picture:
            assert picture.format == "PNG" and picture.size == original.size
    image_entries = json.loads((out_dir / "images.json").read_text())
    assert sorted(e["id"] for e in image_entries) == [1, 42]  # 42 from "000000000042.png"
    gt = COCO()
    gt.dataset = {
        "images": image_entries,
        "annotations": [],
        "categories": [{"id": i, "name": str(i)} for i in CATEGORY_IDS],
    }
    gt.createIndex()
    results = json.loads((out_dir / "results.json").read_text())
    assert results, "threshold 0 keeps every detection"
    dt = gt.loadRes(str(out_dir / "results.json"))
    assert len(dt.getAnnIds()) == len(results)
    sizes = {e["id"]: (e["height"], e["width"]) for e in image_entries}
    for r in results:
        assert r["category_id"] in CATEGORY_IDS and r["score"] >= min_score
        height, width = sizes[r["image_id"]]
        assert list(r["segmentation"]["size"]) == [height, width]
        assert mask_utils.decode(r["segmentation"]).shape == (height, width)
        x, y, w, h = r["bbox"]
        assert -1e-3 <= x and x + w <= width + 1e-3 and -1e-3 <= y and y + h <= height + 1e-3
    return results


def test_predict_with_saved_model(export_base, images, tmp_path, capsys, loaded_export):
    out = tmp_path / "pred"
    argv = [*map(str, images), "--model", str(export_base), "--out", str(out), "--threshold", "0"]
    assert predict_cli.main(argv) == 0
    results = _check_outputs(out, images, 0.0)
    # Same detections as the signature run directly (count per image, scores).
    encoded = images[1].read_bytes()
    direct = loaded_export.signatures["serving_default"](images=np.array([encoded], object))
    n = int(direct["num_detections"][0])
    scores = sorted(r["score"] for r in results if r["image_id"] == 42)
    np.testing.assert_allclose(
        scores, np.sort(direct["detection_scores"][0, :n].numpy()), rtol=1e-5
    )
    # A higher threshold keeps fewer.
    out2 = tmp_path / "pred2"
    cut = float(np.median([r["score"] for r in results]))
    argv2 = [*map(str, images), "--model", str(export_base / "1"), "--out", str(out2)]
    assert predict_cli.main(argv2 + ["--threshold", str(cut)]) == 0
    kept = json.loads((out2 / "results.json").read_text())
    assert len(kept) == sum(r["score"] >= cut for r in results) < len(results)


def test_predict_with_keras_file_matches_saved_model(keras_file, export_base, images, tmp_path):
    argv = [*map(str, images), "--threshold", "0", "--out"]
    assert predict_cli.main(argv + [str(tmp_path / "k"), "--model", str(keras_file)]) == 0
    assert predict_cli.main(argv + [str(tmp_path / "s"), "--model", str(export_base)]) == 0
    from_keras = _check_outputs(tmp_path / "k", images, 0.0)
    from_saved = json.loads((tmp_path / "s" / "results.json").read_text())
    assert len(from_keras) == len(from_saved)
    for a, b in zip(from_keras, from_saved, strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-2)
        np.testing.assert_allclose(a["score"], b["score"], atol=1e-4)


def _fails_cleanly(main, argv, capsys, pattern, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert pattern in err, err


def test_predict_model_path_errors(images, tmp_path, capsys):
    img = str(images[0])
    out = str(tmp_path / "o")
    _fails_cleanly(
        predict_cli.main,
        [img, "--model", str(tmp_path / "missing.keras"), "--out", out],
        capsys,
        "mnc-predict: error: --model: no such file or directory",
    )
    (tmp_path / "empty_dir").mkdir()
    _fails_cleanly(
        predict_cli.main,
        [img, "--model", str(tmp_path / "empty_dir"), "--out", out],
        capsys,
        "not a SavedModel directory",
    )
    (tmp_path / "corrupt" / "1").mkdir(parents=True)
    (tmp_path / "corrupt" / "1" / "saved_model.pb").write_bytes(b"\x00garbage")
    _fails_cleanly(
        predict_cli.main,
        [img, "--model", str(tmp_path / "corrupt"), "--out", out],
        capsys,
        "could not load the SavedModel",
    )
    (tmp_path / "notes.txt").write_text("hello")
    _fails_cleanly(
        predict_cli.main,
        [img, "--model", str(tmp_path / "notes.txt"), "--out", out],
        capsys,
        "expected a .keras file",
    )
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    _fails_cleanly(
        predict_cli.main,
        [img, "--model", str(tmp_path / "broken.keras"), "--out", out],
        capsys,
        "could not load",
    )
    _fails_cleanly(
        predict_cli.main,
        [str(tmp_path / "nope.jpg"), "--model", str(tmp_path), "--out", out],
        capsys,
        "IMAGE: no such file",
    )
    _fails_cleanly(predict_cli.main, [img, "--out", out], capsys, "--model")


def test_predict_skips_an_unreadable_image(export_base, images, tmp_path, capsys):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(images[0].read_bytes()[:200])  # a JPEG header, then nothing decodable
    argv = [str(junk), str(images[0]), "--model", str(export_base), "--out", str(tmp_path / "o")]
    assert predict_cli.main(argv + ["--threshold", "0"]) == 1
    err = capsys.readouterr().err
    assert "junk.jpg: not a readable image" in err and "Traceback" not in err
    assert (tmp_path / "o" / "street.png").is_file()


def test_export_cli(keras_file, tmp_path, capsys):
    import tensorflow as tf

    out = tmp_path / "export"
    assert export_cli.main(["--model", str(keras_file), "--out", str(out), "--version", "3"]) == 0
    assert "serving_default" in capsys.readouterr().out
    loaded = tf.saved_model.load(str(out / "3"))
    assert set(loaded.signatures) == {
        "serving_default",
        "serving_image_tensor",
        "serving_tf_example",
    }
    result = loaded.signatures["serving_image_tensor"](images=scene(40, 70)[None])
    assert result["detection_masks"].shape[0] == 1
    _fails_cleanly(
        export_cli.main,
        ["--model", str(keras_file), "--out", str(out), "--version", "3"],
        capsys,
        "already exists; pass --overwrite",
    )
    _fails_cleanly(
        export_cli.main,
        ["--model", str(tmp_path / "missing.keras"), "--out", str(out)],
        capsys,
        "--model: no such file",
    )
    (tmp_path / "x.txt").write_text("x")
    _fails_cleanly(
        export_cli.main,
        ["--model", str(tmp_path / "x.txt"), "--out", str(out)],
        capsys,
        "--model: expected a .keras file",
    )
    _fails_cleanly(
        export_cli.main,
        ["--model", str(keras_file), "--out", str(out), "--version", "0"],
        capsys,
        "--version: expected a positive integer",
    )
