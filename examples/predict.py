"""Instance segmentation of image files with a trained ``.keras`` model, in Python.

    python examples/predict.py runs/shapes_example/final.keras data/shapes/val/images/val_000000.jpg

The same as ``mnc-predict IMAGE... --model M --out DIR`` (which also reads SavedModels and
writes COCO-format results), spelled out with the Python API: load the model, resize each
image the way the model was trained (``mnc_tf.data.preprocess.resize_image`` with the model's
``short_side`` / ``max_side``), ``predict``, map the boxes back to the original image and
draw the instances with ``mnc_tf.visualize``.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".keras file written by mnc-train")
    parser.add_argument("images", nargs="+", help="JPEG/PNG files")
    parser.add_argument("--out", default="predictions", help="output folder for the pictures")
    parser.add_argument(
        "--threshold", type=float, default=None, help="score threshold (default: the model's)"
    )
    args = parser.parse_args(argv)

    from mnc_tf import console

    console.quiet_tensorflow()  # no TensorFlow start-up banner (before importing it)

    import numpy as np
    import tensorflow as tf

    import mnc_tf
    from mnc_tf import visualize
    from mnc_tf.data.preprocess import resize_image

    model = mnc_tf.load_model(args.model)  # registers the mnc_tf classes first
    threshold = (
        model.config.postprocess.predict_score_threshold
        if args.threshold is None
        else args.threshold
    )
    cfg = model.config
    os.makedirs(args.out, exist_ok=True)
    for path in args.images:
        original = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image, info = resize_image(original, cfg.input.short_side, cfg.input.max_side)
        out = model.predict_on_batch(
            {"images": image[None], "image_info": info[None]}
        )  # boxes in resized-image pixels
        n = int(out["num_detections"][0])
        scale = np.asarray(info)[2]  # (sy, sx) = resized / original
        boxes = np.asarray(out["boxes"][0, :n]) / np.concatenate([scale, scale])
        scores = np.asarray(out["scores"][0, :n])
        classes = np.asarray(out["classes"][0, :n])
        name = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".png")
        visualize.save_visualization(
            name,
            original.numpy(),
            boxes,
            np.asarray(out["masks"][0, :n]),  # box-relative; pasted at the original-pixel boxes
            classes,
            scores,
            model.class_names,
            score_threshold=threshold,
        )
        keep = scores >= threshold
        names = [model.class_names[c - 1] if model.class_names else str(c) for c in classes[keep]]
        print(f"{path}: {int(keep.sum())} instances {names} -> {name}")


if __name__ == "__main__":
    main()
