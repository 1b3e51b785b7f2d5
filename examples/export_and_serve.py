"""From a trained ``.keras`` model to a served prediction, in one script.

    python examples/export_and_serve.py --model model.keras --image cat.jpg --out demo/
    python examples/export_and_serve.py            # an untrained tiny model and a made-up image

Steps:

1. export the model as a SavedModel in ``demo/export/1`` (what ``mnc-export`` does);
2. run its three signatures on the image in **TensorFlow's Session loader** — the loader TF
   Serving uses — through the C API in a process without Python
   (``tools/saved_model_loader_check.c``, compiled with ``gcc`` against the TensorFlow wheel;
   skipped with a note when no C compiler is found), compared with Python's loader;
3. load it in a **fresh Python process that does not import mnc_tf** (plain TensorFlow's
   ``tf.saved_model.load``) and run ``serving_default`` on the image;
4. turn the answer into full-image masks and a picture (``demo/prediction.png``);
5. print the ``docker run tensorflow/serving`` line and a client command for the export.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runs in the child process: plain TensorFlow + NumPy, no mnc_tf.
_SERVE_WITHOUT_MNC_TF = r"""
import json, sys
import numpy as np
import tensorflow as tf

version_dir, image_path, out_path = sys.argv[1:4]
model = tf.saved_model.load(version_dir)
encoded = open(image_path, "rb").read()
outputs = model.signatures["serving_default"](images=tf.constant([encoded]))
np.savez(out_path, **{k: v.numpy() for k, v in outputs.items()})
print(json.dumps({"mnc_tf_imported": any(m.startswith("mnc_tf") for m in sys.modules),
                  "num_detections": int(outputs["num_detections"][0])}))
"""


def _demo_model():
    from mnc_tf.config import MNCConfig
    from mnc_tf.modeling.mnc import MNC

    return MNC(
        num_classes=3,
        backbone="tiny",
        config=MNCConfig.tiny_shapes(),
        class_names=["circle", "square", "triangle"],
    )


def _demo_image(path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(30, 80, size=(120, 180, 3)).astype(np.uint8)
    image[20:70, 30:90] = (230, 60, 60)
    image[60:110, 110:170] = (60, 200, 90)
    Image.fromarray(image).save(path, quality=95)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help=".keras file (default: an untrained tiny model)")
    parser.add_argument("--image", help="image file (default: a generated picture)")
    parser.add_argument("--out", default="demo", help="working directory")
    parser.add_argument(
        "--threshold", type=float, default=None, help="score threshold (default: the model's)"
    )
    args = parser.parse_args(argv)

    from mnc_tf import console

    console.quiet_tensorflow()  # no TensorFlow start-up banner (before importing it)
    from mnc_tf import visualize
    from mnc_tf.export import export_serving, load_keras_model, read_labels

    os.makedirs(args.out, exist_ok=True)
    model = load_keras_model(args.model) if args.model else _demo_model()
    image_path = args.image or os.path.join(args.out, "demo.jpg")
    if not args.image:
        _demo_image(image_path)

    # 1. Export (a fresh version number each run, like a training pipeline would).
    export_dir = os.path.join(args.out, "export")
    existing = [int(d) for d in os.listdir(export_dir) if d.isdigit()] if os.path.isdir(
        export_dir
    ) else []  # fmt: skip
    version_dir = export_serving(model, export_dir, version=max(existing, default=0) + 1)
    print(f"1. exported {version_dir}")

    # 2. TF Serving's loader (TensorFlow's C-API Session loader, no Python in that process).
    from mnc_tf.export import session_loader

    try:
        checker = session_loader.build(args.out)
    except RuntimeError as e:
        print(f"2. Session-loader check skipped: {str(e).splitlines()[0]}")
    else:
        status = session_loader.main([version_dir, image_path, "--checker", checker])
        if status != 0:
            sys.exit("the export did not run in TensorFlow's Session loader (see above)")
        print("2. the export runs in TensorFlow's Session loader (the one TF Serving uses)")

    # 3. Load in a Python process without mnc_tf.
    npz = os.path.join(args.out, "outputs.npz")
    child = subprocess.run(
        [sys.executable, "-c", _SERVE_WITHOUT_MNC_TF, version_dir, image_path, npz],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        sys.exit(f"serving process failed:\n{child.stderr[-2000:]}")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"3. plain-TensorFlow Python process: {report}")

    # 4. Picture.
    import numpy as np

    outputs = dict(np.load(npz))
    image = visualize.load_image(image_path)
    n = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0, :n]
    masks = visualize.full_image_masks(outputs["detection_masks"][0, :n], boxes, image.shape[:2])
    labels = read_labels(os.path.join(version_dir, "assets", "labels.txt"))
    picture_path = os.path.join(args.out, "prediction.png")
    visualize.save_visualization(
        picture_path,
        image,
        boxes,
        masks,
        outputs["detection_classes"][0, :n],
        outputs["detection_scores"][0, :n],
        labels,
        score_threshold=(
            model.config.postprocess.predict_score_threshold
            if args.threshold is None
            else args.threshold
        ),
    )
    print(f"4. picture: {picture_path}")

    # 5. How to serve it for real.
    base = os.path.abspath(export_dir)
    print(
        "5. serve it with TF Serving:\n"
        f"   docker run -p 8501:8501 --mount type=bind,source={base},target=/models/mnc "
        "-e MODEL_NAME=mnc -t tensorflow/serving\n"
        "   then: python examples/serving_client.py IMAGE --rest http://localhost:8501 "
        f"--labels {os.path.join(version_dir, 'assets', 'labels.txt')}"
    )


if __name__ == "__main__":
    main()
