"""``mnc-eval``: COCO AP and VOC mAP^r of a trained ``.keras`` model on a dataset.

    mnc-eval --model model.keras --annotations val.json --images val_images/ \\
             [--short-side 600 --max-side 1000 --batch-size 1] [--out metrics.json]
    mnc-eval --model model.keras --dataset voc --root VOCdevkit/VOC2012 --split val

Prints a table of metrics and writes them as JSON (``--out``); ``--results`` also writes the
detections as a standard COCO results JSON. COCO datasets get bbox/segm AP/AR; ``--voc`` (on
by default for ``sbd``/``voc`` datasets) adds mAP^r at mask IoU 0.5 and 0.7. Exit status: 0
ok, 2 usage error (missing file, unloadable model) with a one-line message and no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

PROG = "mnc-eval"


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Evaluate an MNC model: COCO AP/AR and VOC mAP^r."
    )
    parser.add_argument("--model", required=True, help="trained model (.keras file)")
    parser.add_argument(
        "--dataset",
        choices=("coco", "sbd", "voc"),
        default="coco",
        help="coco: --annotations + --images; sbd/voc: --root + --split (default coco)",
    )
    parser.add_argument("--annotations", help="COCO instances JSON (coco)")
    parser.add_argument("--images", help="image folder the JSON's file names refer to (coco)")
    parser.add_argument("--root", help="SBD dataset/ or VOC2012/ folder (sbd, voc)")
    parser.add_argument("--split", default="val", help="split list name (sbd, voc; default val)")
    parser.add_argument("--short-side", type=int, default=600, help="resize target (600)")
    parser.add_argument("--max-side", type=int, default=1000, help="longer side limit (1000)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per batch (1)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate the first N")
    parser.add_argument(
        "--voc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also compute mAP^r@0.5/0.7 (default: on for sbd/voc, off for coco)",
    )
    parser.add_argument("--mask-threshold", type=float, default=0.4, help="mask binarisation (0.4)")
    parser.add_argument("--out", help="write the metrics JSON here")
    parser.add_argument("--results", help="write COCO-format detections JSON here")
    return parser


def _error(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def format_table(metrics):
    """Two-column text table of ``{name: value}``."""
    width = max((len(k) for k in metrics), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for name, value in metrics.items():
        shown = "   n/a" if value is None or math.isnan(value) else f"{value:6.4f}"
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


def _check_args(args):
    """Return an error message for the first bad argument, or ``None``."""
    if not os.path.isfile(args.model):
        return f"--model: no such file: {args.model}"
    if args.dataset == "coco":
        if not args.annotations or not args.images:
            return "--annotations and --images are required with --dataset coco"
        if not os.path.isfile(args.annotations):
            return f"--annotations: no such file: {args.annotations}"
        if not os.path.isdir(args.images):
            return f"--images: no such directory: {args.images}"
    else:
        if not args.root or not os.path.isdir(args.root):
            return f"--root: no such directory: {args.root}"
    for name in ("short_side", "max_side", "batch_size"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}"
    if args.max_images is not None and args.max_images < 1:
        return f"--max-images: must be >= 1, got {args.max_images}"
    return None


def main(argv=None):
    """Entry point; returns the exit status (0 ok, 2 usage/data/model error)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed usage and the message
        return int(e.code or 0)
    message = _check_args(args)
    if message:
        return _error(message)

    # Heavy imports after the argument checks so usage errors are instant.
    from mnc_tf.data import coco_dataset, sbd_dataset
    from mnc_tf.evaluation import COCOEvaluator, VOCEvaluator, evaluate_model
    from mnc_tf.export.predictor import load_keras_model

    common = {
        "batch_size": args.batch_size,
        "short_side": args.short_side,
        "max_side": args.max_side,
        "training": False,
    }
    try:
        if args.dataset == "coco":
            dataset = coco_dataset(args.annotations, args.images, **common)
        else:
            dataset = sbd_dataset(args.root, args.split, layout=args.dataset, **common)
    except ValueError as e:
        return _error(f"dataset: {e}")
    info = dataset.info
    try:
        model = load_keras_model(args.model)
    except (FileNotFoundError, ValueError) as e:
        text = str(e)
        return _error(
            f"--model: {text[len('model:') :].strip() if text.startswith('model:') else text}"
        )

    evaluators = [COCOEvaluator(info.coco, info.category_ids, mask_threshold=args.mask_threshold)]
    if args.voc if args.voc is not None else args.dataset != "coco":
        evaluators.append(
            VOCEvaluator(
                info.num_classes, class_names=info.class_names, mask_threshold=args.mask_threshold
            )
        )
    max_batches = None
    if args.max_images:
        max_batches = math.ceil(args.max_images / args.batch_size)
    metrics = evaluate_model(
        model,
        dataset,
        evaluators,
        info=info,
        mask_threshold=args.mask_threshold,
        max_batches=max_batches,
    )
    print(format_table(metrics))
    if info.skipped or info.fixed:
        print(f"data: {info.report()}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    # JSON has no NaN: metrics COCO cannot compute (no GT in a range) are null
                    "metrics": {k: None if math.isnan(v) else v for k, v in metrics.items()},
                    "model": args.model,
                    "dataset": args.annotations or args.root,
                    "num_images": info.num_images,
                    "skipped": info.skipped,
                    "fixed": info.fixed,
                },
                f,
                indent=1,
            )
        print(f"metrics -> {args.out}")
    if args.results:
        evaluators[0].write_results(args.results)
        print(f"detections -> {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
