"""Every shipped config (configs/*.yaml) and example (examples/*.py) runs, as a user runs it.

For each one a few images are generated in the config's data format — COCO JSON, the SBD
``.mat`` layout, the VOC 2012 PNG layout, synthetic shapes — at the paths the config names
(relative paths, resolved from the working directory, as for a user who runs the command from
a folder holding ``data/``), and the command runs for 2 steps with only sizes, steps and the
backbone shrunk by ``--set`` overrides (:data:`SHRINK`); every other setting is as shipped
(optimiser, sampling, ``max_val_images``, evaluation and export).
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image
from training_testutil import REPO, subprocess_env

CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "configs", "*.yaml")))
EXAMPLES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "examples", "*.py")))

# Sizes, steps and the backbone (and its weights) only. The paper configs' 600/1000 px images,
# VGG-16/ResNet-101 and 4096-wide fc layers would take minutes per step on a CPU; the anchors
# shrink with the images (base 16 px at 600 px -> 2 px at 64 px) so that the RPN still has
# anchors inside them.
SHRINK = {
    "shapes_tiny_mnc5.yaml": [
        "model.optimizer.total_steps=2",
        "train.steps_per_epoch=2",
        "data.shapes.num_train_images=6",
        "data.shapes.num_val_images=2",
        "data.shapes.image_size=64",
        "model.input.short_side=64",
        "model.input.max_side=64",
    ],
    "paper": [
        "model.backbone=tiny",
        # shipped: imagenet (a download) for VGG-16 / ResNet-101
        "model.backbone_options.weights=null",
        "model.input.short_side=64",
        "model.input.max_side=64",
        "model.rpn.anchor_base_size=2",
        "model.heads.fc_dim=64",
        "model.heads.mask_fc_dim=32",
        "model.optimizer.total_steps=2",
        "train.steps_per_epoch=2",
        "train.eval_every_epochs=1",  # one evaluation in the 2-step run (shipped: every 10)
    ],
}


def _shrink(config):
    return SHRINK.get(config, SHRINK["paper"])


def _sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def _run(args, cwd, timeout=420):
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


# ------------------------------------------------------------------------ data generators
def _instance_scene(seed, height=72, width=96, n=3):
    """An RGB image with ``n`` coloured rectangles/ellipses and its instance map (0 = bg)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
    seg = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for k in range(1, n + 1):
        h, w = rng.integers(16, 32, 2)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        if k % 2:
            inside = (yy >= y) & (yy < y + h) & (xx >= x) & (xx < x + w)
        else:
            inside = ((yy - y - h / 2) / (h / 2)) ** 2 + ((xx - x - w / 2) / (w / 2)) ** 2 <= 1
        seg[inside] = k
        image[inside] = rng.integers(120, 256, 3)
    return image, seg


def make_coco(root, n_train=4, n_val=2):
    """COCO 2017 layout under ``root``: annotations/instances_{train,val}2017.json and the
    train2017/ and val2017/ image folders (the generated shapes images, COCO JSON)."""
    from mnc_tf.data import make_shapes_dataset

    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        shapes = make_shapes_dataset(
            os.path.join(root, "_gen"), n, seed=3, image_size=(72, 96), split=split
        )
        shutil.move(shapes.image_dir, os.path.join(root, f"{split}2017"))
        shutil.move(
            shapes.annotation_file,
            os.path.join(root, "annotations", f"instances_{split}2017.json"),
        )
    shutil.rmtree(os.path.join(root, "_gen"))
    return root


def make_sbd(root, names=("2008_000002", "2008_000003", "2008_000004", "2008_000005")):
    """SBD ``benchmark_RELEASE/dataset`` layout: img/*.jpg, inst/*.mat (GTinst), cls/*.mat
    (GTcls), train.txt (all but the last name) and val.txt (the last)."""
    for sub in ("img", "inst", "cls"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i, name in enumerate(names):
        image, seg = _instance_scene(i)
        categories = np.array([15, 12, 3])[: int(seg.max())]  # person, horse, bird
        class_map = np.zeros_like(seg)
        for k, c in enumerate(categories, 1):
            class_map[seg == k] = c
        scipy.io.savemat(
            os.path.join(root, "inst", f"{name}.mat"),
            {
                "GTinst": {
                    "Segmentation": seg,
                    "Categories": categories.reshape(-1, 1).astype(np.uint8),
                    "Boundaries": np.zeros((len(categories), 1), object),
                }
            },
        )
        scipy.io.savemat(
            os.path.join(root, "cls", f"{name}.mat"),
            {"GTcls": {"Segmentation": class_map, "CategoriesPresent": np.unique(categories)}},
        )
        Image.fromarray(image).save(os.path.join(root, "img", f"{name}.jpg"), quality=95)
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("\n".join(names[:-1]) + "\n")
    with open(os.path.join(root, "val.txt"), "w") as f:
        f.write(names[-1] + "\n")
    return root


def make_voc(root, names=("2007_000032", "2007_000033", "2007_000039", "2007_000042")):
    """VOC 2012 layout: JPEGImages/, SegmentationObject/ and SegmentationClass/ palette PNGs
    (255 = void border), ImageSets/Segmentation/{train,val}.txt."""
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    palette = [int(v) for v in np.random.default_rng(0).integers(0, 256, 768)]
    for i, name in enumerate(names):
        image, seg = _instance_scene(10 + i)
        class_map = np.zeros_like(seg)
        for k, c in enumerate((7, 20, 9), 1):
            class_map[seg == k] = c
        border = np.zeros_like(seg, bool)
        border[:, 1:] |= seg[:, 1:] != seg[:, :-1]
        seg[border], class_map[border] = 255, 255
        for sub, arr in (("SegmentationObject", seg), ("SegmentationClass", class_map)):
            png = Image.fromarray(arr, mode="P")
            png.putpalette(palette)
            png.save(os.path.join(root, sub, f"{name}.png"))
        Image.fromarray(image).save(os.path.join(root, "JPEGImages", f"{name}.jpg"), quality=95)
    splits = os.path.join(root, "ImageSets", "Segmentation")
    with open(os.path.join(splits, "train.txt"), "w") as f:
        f.write("\n".join(names[:-1]) + "\n")
    with open(os.path.join(splits, "val.txt"), "w") as f:
        f.write(names[-1] + "\n")
    return root


def _check_run(run, steps=2, evaluated=None):
    info = json.loads(open(os.path.join(run, "run_info.json")).read())
    assert info["final_step"] == steps and info["steps_run"] == steps
    assert os.path.isfile(os.path.join(run, "final.keras"))
    assert os.path.isfile(os.path.join(run, "export", "1", "saved_model.pb"))
    history = json.loads(open(os.path.join(run, "history.json")).read())
    assert np.isfinite(history["loss"]).all()
    if evaluated:
        assert evaluated in history, sorted(history)
    return info, history


# ------------------------------------------------------------------------ configs
def test_every_shipped_config_is_tested():
    assert CONFIGS == [
        "coco_resnet101_mnc5.yaml",
        "shapes_tiny_mnc5.yaml",
        "voc2012_vgg16_mnc5.yaml",
    ]


def _mnc_train(config, cwd, extra=()):
    run = os.path.join(cwd, "run")
    args = ["-m", "mnc_tf.cli.train", "--config", os.path.join(REPO, "configs", config)]
    _run([*args, "--model-dir", run, *_sets(_shrink(config)), *_sets(extra)], cwd)
    return run


@pytest.mark.timeout(600)
def test_config_shapes_tiny(tmp_path):
    run = _mnc_train("shapes_tiny_mnc5.yaml", tmp_path)  # generates data/shapes itself
    assert os.path.isfile(tmp_path / "data" / "shapes" / "train" / "annotations.json")
    _check_run(run)


@pytest.mark.timeout(600)
def test_config_coco_resnet101(tmp_path):
    # The config's own paths: data/coco/annotations/instances_train2017.json, ...
    make_coco(tmp_path / "data" / "coco")
    run = _mnc_train("coco_resnet101_mnc5.yaml", tmp_path)
    _, history = _check_run(run, evaluated="segm/AP")  # best_metric of the config
    assert os.path.isfile(os.path.join(run, "best.keras"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("layout", ["sbd", "voc"])
def test_config_voc2012_vgg16(tmp_path, layout):
    root = tmp_path / "data" / "SBD" / "dataset"  # the config's data.root
    if layout == "sbd":
        make_sbd(root)
        extra = []
    else:  # the same config on the VOC 2012 PNG layout
        make_voc(root)
        extra = ["data.format=voc"]
    run = _mnc_train("voc2012_vgg16_mnc5.yaml", tmp_path, extra)
    info, history = _check_run(run, evaluated="mAP_r@0.5")
    assert os.path.isfile(os.path.join(run, f"{layout}_train_annotations.json"))


# ------------------------------------------------------------------------ examples
def test_every_example_is_tested():
    assert EXAMPLES == [
        "export_and_serve.py",
        "predict.py",
        "serving_client.py",
        "train_coco.py",
        "train_shapes.py",
        "train_voc.py",
    ]


@pytest.fixture(scope="module")
def shapes_example(tmp_path_factory):
    """examples/train_shapes.py, 2 steps: a trained model, its export and held-out images."""
    cwd = tmp_path_factory.mktemp("train_shapes")
    run = cwd / "runs" / "shapes_example"  # the example's default --model-dir
    proc = _run(
        [os.path.join(REPO, "examples", "train_shapes.py"), "--num-pictures", "2"]
        + _sets(_shrink("shapes_tiny_mnc5.yaml")),
        cwd,
    )
    return {"cwd": cwd, "run": run, "stdout": proc.stdout}


@pytest.mark.timeout(600)
def test_example_train_shapes(shapes_example):
    run = shapes_example["run"]
    _check_run(str(run))
    result = json.loads((run / "shapes_results.json").read_text())
    assert result["heldout_images"] == 2 and result["steps"] == 2
    for key in ("mAP_r@0.5", "segm_AP", "bbox_AP"):
        assert 0.0 <= result[key] <= 1.0
    assert len(list((run / "visualizations").glob("*.png"))) == 2
    assert "held-out split: 2 images" in shapes_example["stdout"]


@pytest.mark.timeout(600)
def test_example_train_coco(tmp_path):
    coco = make_coco(tmp_path / "coco")
    run = tmp_path / "run"
    proc = _run(
        [os.path.join(REPO, "examples", "train_coco.py"), "--coco-dir", str(coco)]
        + ["--model-dir", str(run), *_sets(_shrink("coco_resnet101_mnc5.yaml"))],
        tmp_path,
    )
    _check_run(str(run), evaluated="segm/AP")
    assert "2 validation images" in proc.stdout and "segm AP" in proc.stdout


@pytest.mark.timeout(600)
def test_example_train_voc(tmp_path):
    sbd = make_sbd(tmp_path / "sbd")
    run = tmp_path / "run"
    proc = _run(
        [os.path.join(REPO, "examples", "train_voc.py"), "--sbd-root", str(sbd)]
        + ["--model-dir", str(run), *_sets(_shrink("voc2012_vgg16_mnc5.yaml"))],
        tmp_path,
    )
    _check_run(str(run), evaluated="mAP_r@0.5")
    assert "SBD val: 1 images" in proc.stdout and "mAP_r@0.5:" in proc.stdout


@pytest.mark.timeout(600)
def test_example_predict(shapes_example, tmp_path):
    images = sorted((shapes_example["cwd"] / "data" / "shapes" / "val" / "images").iterdir())
    model = shapes_example["run"] / "final.keras"
    out = tmp_path / "pictures"
    proc = _run(
        [os.path.join(REPO, "examples", "predict.py"), str(model), *map(str, images)]
        + ["--out", str(out)],
        tmp_path,
    )
    for image in images:
        picture = out / (image.stem + ".png")
        assert picture.is_file() and f"{image}: " in proc.stdout
        assert Image.open(picture).size == Image.open(image).size


@pytest.mark.timeout(600)
def test_example_export_and_serve(shapes_example, tmp_path):
    images = sorted((shapes_example["cwd"] / "data" / "shapes" / "val" / "images").iterdir())
    out = tmp_path / "demo"
    model = shapes_example["run"] / "final.keras"
    _run(
        [os.path.join(REPO, "examples", "export_and_serve.py"), "--model", str(model)]
        + ["--image", str(images[0]), "--out", str(out)],
        tmp_path,
    )
    assert (out / "export" / "1" / "saved_model.pb").is_file()
    assert (out / "prediction.png").is_file()


class _StandInRestServer:
    """A local HTTP server answering TF Serving's REST ``:predict`` (row format) by running the
    export's own signature in this process — a stand-in so that the example runs end to end,
    not TF Serving (tests/export/test_session_loader.py checks the export in TF Serving's
    Session loader)."""

    def __init__(self, version_dir):
        import base64
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        import tensorflow as tf

        loaded = tf.saved_model.load(str(version_dir))
        self.requests = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append((self.path, body["signature_name"]))
                fn = loaded.signatures[body["signature_name"]]
                images = [base64.b64decode(i["b64"]) for i in body["instances"]]
                out = {k: v.numpy() for k, v in fn(images=tf.constant(images)).items()}
                rows = [{k: v[i].tolist() for k, v in out.items()} for i in range(len(images))]
                data = json.dumps({"predictions": rows}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(600)
def test_example_serving_client(shapes_example, tmp_path):
    images = sorted((shapes_example["cwd"] / "data" / "shapes" / "val" / "images").iterdir())
    version_dir = shapes_example["run"] / "export" / "1"
    server = _StandInRestServer(version_dir)
    try:
        out = tmp_path / "predictions"
        proc = _run(
            [os.path.join(REPO, "examples", "serving_client.py"), str(images[0])]
            + ["--rest", server.url, "--labels", str(version_dir / "assets" / "labels.txt")]
            + ["--out", str(out)],
            tmp_path,
        )
    finally:
        server.close()
    assert server.requests == [("/v1/models/mnc:predict", "serving_default")]
    picture = out / (images[0].stem + ".png")
    assert picture.is_file() and f"{images[0]}: " in proc.stdout
    assert Image.open(picture).size == Image.open(images[0]).size
