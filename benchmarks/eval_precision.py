"""Accuracy of a trained MNC in float32 and in a 16-bit precision, on the same images (JSON).

Evaluates the ``.keras`` model as it is (float32) and its
:func:`mnc_tf.precision.with_precision` copy on a COCO-format split with the library's own
evaluators (pycocotools ``COCOeval`` mask / box AP, VOC mAP^r), and prints both sets of
metrics and their differences. Issue 14's bar: |Δ mask AP| and |Δ mAP^r@0.5| ≤ 0.01.

    python benchmarks/eval_precision.py --model runs/shapes_example/final.keras \\
        --annotations data/shapes/val/annotations.json --images data/shapes/val/images
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METRICS = ("segm/AP", "segm/AP50", "bbox/AP", "mAP_r@0.5", "mAP_r@0.7")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained MNC .keras file")
    parser.add_argument("--annotations", required=True, help="COCO JSON of the split")
    parser.add_argument("--images", required=True, help="image folder of the split")
    parser.add_argument("--precision", choices=("bfloat16", "float16"), default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)

    from mnc_tf import console

    console.quiet_tensorflow()
    import mnc_tf
    from mnc_tf.data import coco_dataset
    from mnc_tf.evaluation import COCOEvaluator, VOCEvaluator, evaluate_model
    from mnc_tf.precision import with_precision

    model = mnc_tf.load_model(args.model)
    cfg = model.config
    data = coco_dataset(
        args.annotations,
        args.images,
        batch_size=args.batch_size,
        training=False,
        short_side=cfg.input.short_side,
        max_side=cfg.input.max_side,
        max_instances=cfg.input.max_instances,
    )
    results = {"model": args.model, "images": args.images, "precision": args.precision}
    for name, m in (("float32", with_precision(model, "float32")),
                    (args.precision, with_precision(model, args.precision))):  # fmt: skip
        start = time.perf_counter()
        metrics = evaluate_model(
            m,
            data,
            [
                COCOEvaluator(args.annotations, category_ids=data.info.category_ids),
                VOCEvaluator(data.info.num_classes),
            ],
        )
        results[name] = {k: float(metrics[k]) for k in METRICS}
        results[name]["seconds"] = time.perf_counter() - start
    results["difference"] = {k: results[args.precision][k] - results["float32"][k] for k in METRICS}
    results["within_0.01"] = {
        k: abs(results["difference"][k]) <= 0.01 for k in ("segm/AP", "mAP_r@0.5")
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
