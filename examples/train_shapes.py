"""Train a 5-stage MNC on synthetic shapes on a CPU, evaluate it on held-out images.

    python examples/train_shapes.py                      # ~15-20 min on a 2-core CPU
    python examples/train_shapes.py --set model.optimizer.total_steps=300 --model-dir runs/quick

What it does:

1. generates the shapes dataset (COCO format: JPEGs + instances JSON) — a training split and a
   held-out ``val`` split of *different* images — under ``data/shapes`` (once);
2. trains ``MNC(num_classes=3, backbone="tiny", num_stages=5)`` with ``mnc_tf.training.train``
   and ``configs/shapes_tiny_mnc5.yaml`` (checkpoints, TensorBoard logs and the exported
   SavedModel land in ``--model-dir``; running the command again resumes);
3. evaluates the *final* model (not the best-on-val one, which would be selected on the very
   images it is scored on) on every held-out image: VOC mAP^r at mask IoU 0.5 / 0.7 and COCO
   mask (segm) / box (bbox) AP;
4. saves pictures of the predictions on the first held-out images to
   ``<model-dir>/visualizations`` and the numbers to ``<model-dir>/shapes_results.json``.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=os.path.join(os.path.dirname(HERE), "configs", "shapes_tiny_mnc5.yaml")
    )
    parser.add_argument("--model-dir", default="runs/shapes_example")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (repeatable)",
    )
    parser.add_argument("--num-pictures", type=int, default=8)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from mnc_tf import console

    console.quiet_tensorflow()  # no TensorFlow start-up banner (before importing it)
    from mnc_tf.training.config import load_config

    config = load_config(args.config, args.overrides)
    start = time.time()

    # 1-2. Data (generated on first use) and training.
    from mnc_tf.training.train import train

    history = train(config, args.model_dir)
    train_seconds = time.time() - start

    # 3. Evaluation of the final model on the whole held-out split.
    import keras
    import numpy as np

    from mnc_tf import visualize
    from mnc_tf.data import coco_dataset
    from mnc_tf.evaluation import COCOEvaluator, VOCEvaluator, evaluate_model

    shapes = config.data.shapes
    val_dir = os.path.join(shapes.dir, "val")
    annotations = os.path.join(val_dir, "annotations.json")
    mnc = config.mnc_config()
    val = coco_dataset(
        annotations,
        os.path.join(val_dir, "images"),
        batch_size=4,
        training=False,
        short_side=mnc.input.short_side,
        max_side=mnc.input.max_side,
        max_instances=mnc.input.max_instances,
    )
    model = keras.models.load_model(os.path.join(args.model_dir, "final.keras"))
    eval_start = time.time()
    metrics = evaluate_model(
        model,
        val,
        [
            COCOEvaluator(annotations, category_ids=val.info.category_ids),
            VOCEvaluator(val.info.num_classes),
        ],
    )
    eval_seconds = time.time() - eval_start

    # 4. Pictures of the first held-out images.
    out_dir = os.path.join(args.model_dir, "visualizations")
    saved = 0
    for features, _ in val:
        outputs = {k: np.asarray(v) for k, v in model.predict_on_batch(features).items()}
        for b in range(len(outputs["num_detections"])):
            if saved >= args.num_pictures:
                break
            n = int(outputs["num_detections"][b])
            h, w = (int(v) for v in np.asarray(features["image_info"])[b, 1])
            image = np.asarray(features["images"])[b, :h, :w]
            visualize.save_visualization(
                os.path.join(out_dir, f"val_{int(features['image_id'][b]):04d}.png"),
                image,
                outputs["boxes"][b, :n],
                outputs["masks"][b, :n],
                outputs["classes"][b, :n],
                outputs["scores"][b, :n],
                model.class_names,
                score_threshold=0.5,
            )
            saved += 1
        if saved >= args.num_pictures:
            break

    info = history.run_info
    result = {
        "mAP_r@0.5": metrics["mAP_r@0.5"],
        "mAP_r@0.7": metrics["mAP_r@0.7"],
        "segm_AP": metrics["segm/AP"],
        "segm_AP50": metrics["segm/AP50"],
        "bbox_AP": metrics["bbox/AP"],
        "bbox_AP50": metrics["bbox/AP50"],
        "train_images": shapes.num_train_images,
        "heldout_images": shapes.num_val_images,
        "steps": info["final_step"],
        "global_batch": info["global_batch"],
        "train_seconds_this_process": round(train_seconds, 1),
        "fit_images_per_second": info["images_per_second"],
        "eval_seconds": round(eval_seconds, 1),
        "total_seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(args.model_dir, "shapes_results.json"), "w") as f:
        json.dump(result, f, indent=1)
    print()
    print(f"held-out split: {shapes.num_val_images} images never seen in training")
    print(f"  mAP^r@0.5 = {result['mAP_r@0.5']:.3f}   mAP^r@0.7 = {result['mAP_r@0.7']:.3f}")
    print(
        f"  COCO segm AP = {result['segm_AP']:.3f} (AP50 {result['segm_AP50']:.3f})   "
        f"bbox AP = {result['bbox_AP']:.3f} (AP50 {result['bbox_AP50']:.3f})"
    )
    print(
        f"  time: {result['total_seconds']:.0f} s in total ({info['steps_run']} steps trained "
        f"in this process at {info['images_per_second'] or 0:.1f} images/s)"
    )
    print(f"  pictures: {out_dir}")
    return result


if __name__ == "__main__":
    main()
