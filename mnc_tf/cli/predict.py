"""``mnc-predict``: instance segmentation of image files with a trained or exported model.

    mnc-predict cat.jpg street.png --model export/ --out predictions/ [--threshold 0.3]

``--model`` is a ``.keras`` file, a SavedModel version directory or a TF Serving base
directory (its highest version is used). For every image ``DIR/<stem>.png`` shows the
instances (masks in distinct colours, boxes, class names, scores); ``DIR/results.json`` holds
all detections in COCO results format (``bbox`` ``[x, y, w, h]`` and RLE ``segmentation`` in
original-image pixels, ``category_id`` = dataset category id) and ``DIR/images.json`` the
COCO ``images`` entries (``id``, ``file_name``, ``height``, ``width``) they refer to. An image
file named by a number (COCO's ``000000397133.jpg``) gets that number as ``image_id``; other
images are numbered by their position on the command line (1, 2, ...).

Only detections scoring at least the model's ``predict_score_threshold`` (0.5 unless the
model says otherwise) are drawn and written; ``--threshold`` overrides it. Exit status: 0 ok;
2 bad arguments (a missing or non-image IMAGE, an unloadable model, a threshold outside
[0, 1], an ``--out`` that is a file or cannot be created), with one line naming the
argument, before anything is written; 1 when an image whose header looked fine could not be
decoded (it is skipped, the others are written).
"""

import argparse
import json
import os
import re
import sys

from mnc_tf.cli._common import (
    UsageError,
    check_image_file,
    check_keras_file,
    check_output_dir,
    check_probability,
    error,
    load_mnc_model,
)

PROG = "mnc-predict"


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Instance segmentation of images with an MNC model; writes visualizations "
        "and COCO-format results.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG/PNG/GIF/BMP files")
    parser.add_argument(
        "--model",
        required=True,
        help=".keras file, SavedModel directory or TF Serving base directory",
    )
    parser.add_argument("--out", required=True, help="output directory (created)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="score threshold for drawing and results, in [0, 1] (default: the model's, 0.5)",
    )
    parser.add_argument(
        "--mask-threshold",
        type=float,
        default=None,
        help="mask binarisation threshold, in (0, 1) (default: the model's, 0.4)",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="compute precision of a .keras model (default: the model's own; docs/precision.md)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ log lines and DEBUG log records",
    )
    return parser


def _image_ids(paths):
    ids, used = [], set()
    for position, path in enumerate(paths, 1):
        stem = os.path.splitext(os.path.basename(path))[0]
        image_id = int(stem) if stem.isdigit() else position
        if image_id in used:
            raise ValueError(f"IMAGE: two images map to image_id {image_id} ({path})")
        used.add(image_id)
        ids.append(image_id)
    return ids


def _picture_names(paths):
    names, used = [], set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = f"{stem}.png", 1
        while name in used:  # same file name from different directories
            name, k = f"{stem}_{k}.png", k + 1
        used.add(name)
        names.append(name)
    return names


def _error(message):
    error(PROG, message)


def main(argv=None):
    """Entry point; returns the exit status (0 ok, 1 some image failed, 2 usage/model error)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage + message
        return int(e.code or 0)
    try:
        if args.threshold is not None:
            check_probability(args.threshold, "--threshold", low_open=False, high_open=False)
        if args.mask_threshold is not None:
            check_probability(args.mask_threshold, "--mask-threshold")
        missing = [p for p in args.images if not os.path.exists(p)]
        if missing:
            raise UsageError(f"IMAGE: no such file: {', '.join(missing)}")
        for path in args.images:
            check_image_file(path, "IMAGE")
        if os.path.isfile(args.model):
            check_keras_file(args.model, "--model")
        check_output_dir(args.out, "--out")
    except UsageError as e:
        _error(str(e))
        return 2
    try:
        image_ids = _image_ids(args.images)
    except ValueError as e:
        _error(str(e))
        return 2

    # Heavy imports after argument checks, so usage errors are instant.
    from mnc_tf import console

    console.quiet_tensorflow(args.verbose)
    console.setup_logging(args.verbose)

    import numpy as np
    import tensorflow as tf

    from mnc_tf import visualize
    from mnc_tf.export.coco import coco_results
    from mnc_tf.export.predictor import Predictor

    try:
        if os.path.isfile(args.model):  # a .keras file: an MNC model, or a one-line error
            model = load_mnc_model(args.model)
            if args.precision is not None:
                from mnc_tf.precision import with_precision

                model = with_precision(model, args.precision)
            predictor = Predictor.from_keras_model(model, source=args.model)
        elif args.precision is not None:
            raise UsageError(
                "--precision: applies to a .keras model; a SavedModel computes in the "
                "precision it was exported with (mnc-export --precision)"
            )
        else:
            predictor = Predictor.from_path(args.model)
    except UsageError as e:
        _error(str(e))
        return 2
    except (FileNotFoundError, ValueError) as e:
        message = str(e)
        if message.startswith("model:"):
            message = message[len("model:") :].strip()
        _error(f"--model: {message}")
        return 2
    mask_threshold = (
        predictor.mask_threshold if args.mask_threshold is None else args.mask_threshold
    )
    threshold = predictor.score_threshold if args.threshold is None else args.threshold
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        _error(f"--out: cannot create {args.out}: {e.strerror}")
        return 2
    results, images, failed = [], [], 0
    for path, image_id, picture_name in zip(
        args.images, image_ids, _picture_names(args.images), strict=True
    ):
        with open(path, "rb") as f:
            encoded = f.read()
        try:
            # Decoded eagerly first: its error names the problem ("Invalid JPEG data or
            # size"), where the model's graph would say "Graph execution error".
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
            det = predictor.predict(encoded)
        except tf.errors.InvalidArgumentError as e:
            _error(f"IMAGE: {path}: not a readable image ({_reason(e)}); skipped")
            failed += 1
            continue
        height, width = image.shape[:2]
        keep = det["detection_scores"] >= threshold
        boxes = det["detection_boxes"][keep]
        masks = visualize.full_image_masks(
            det["detection_masks"][keep], boxes, (height, width), threshold=mask_threshold
        )
        scores = det["detection_scores"][keep]
        classes = det["detection_classes"][keep]
        visualize.save_visualization(
            os.path.join(args.out, picture_name),
            image,
            boxes,
            masks,
            classes,
            scores,
            predictor.labels,
            score_threshold=threshold,
        )
        results.extend(coco_results(image_id, boxes, scores, classes, masks))
        images.append(
            {"id": image_id, "file_name": os.path.basename(path), "height": height, "width": width}
        )
        print(f"{path}: {int(np.sum(keep))} instances -> {os.path.join(args.out, picture_name)}")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f)
    with open(os.path.join(args.out, "images.json"), "w", encoding="utf-8") as f:
        json.dump(images, f, indent=1)
    print(
        f"{len(results)} detections with score >= {threshold:g} -> "
        f"{os.path.join(args.out, 'results.json')}"
    )
    return 1 if failed else 0


def _reason(error):
    """The informative line of a TensorFlow error message (not "Graph execution error")."""
    lines = [line.strip() for line in (error.message or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("[[", "Detected at node", "File ", "Graph execution error")):
            line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
            return line.split(" [[")[0].split(" [Op:")[0]
    return type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
