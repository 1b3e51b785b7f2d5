"""``mnc-eval``: COCO AP and VOC mAP^r of a trained ``.keras`` model on a dataset.

    mnc-eval --model model.keras --annotations val.json --images val_images/ \\
             [--batch-size 1] [--out metrics.json]
    mnc-eval --model model.keras --dataset voc --root VOCdevkit/VOC2012 --split val

Images are resized as the model was trained (its ``short_side`` / ``max_side``) and masks
binarised at its ``mask_binarize_threshold``; ``--short-side``, ``--max-side`` and
``--mask-threshold`` override them. Prints a table of metrics and writes them as JSON
(``--out``); ``--results`` also writes the detections as a standard COCO results JSON. COCO
datasets get bbox/segm AP/AR; ``--voc`` (on by default for ``sbd``/``voc`` datasets) adds mAP^r
at mask IoU 0.5 and 0.7. Exit status: 0 ok, 2 usage error (missing file, unloadable model,
value out of range, unwritable output) with a one-line message and no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from mnc_tf.cli._common import (
    UsageError,
    check_input_file,
    check_keras_file,
    check_output_file,
    check_probability,
    error,
    load_mnc_model,
)

PROG = "mnc-eval"


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Evaluate an MNC model: COCO AP/AR and VOC mAP^r."
    )
    parser.add_argument(
        "--model", required=True, help=".keras file, or an mnc-export directory (base or version)"
    )
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
    parser.add_argument(
        "--short-side", type=int, default=None, help="resize target (default: the model's)"
    )
    parser.add_argument(
        "--max-side", type=int, default=None, help="longer side limit (default: the model's)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per batch (1)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate the first N")
    parser.add_argument(
        "--voc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also compute mAP^r@0.5/0.7 (default: on for sbd/voc, off for coco)",
    )
    parser.add_argument(
        "--mask-threshold",
        type=float,
        default=None,
        help="mask binarisation threshold in (0, 1) (default: the model's, 0.4)",
    )
    parser.add_argument("--out", help="write the metrics JSON here")
    parser.add_argument("--results", help="write COCO-format detections JSON here")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ log lines, DEBUG log records and pycocotools' tables",
    )
    return parser


def _error(message):
    return error(PROG, message)


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
    try:
        if not os.path.isdir(args.model):  # a directory: an export, checked when loaded
            check_keras_file(args.model, "--model")
        if args.dataset == "coco":
            if not args.annotations or not args.images:
                return "--annotations and --images are required with --dataset coco"
            check_input_file(args.annotations, "--annotations")
            if os.path.isfile(args.images):
                return f"--images: expected a directory, got the file {args.images}"
            if not os.path.isdir(args.images):
                return f"--images: no such directory: {args.images}"
        else:
            if not args.root or not os.path.isdir(args.root):
                return f"--root: no such directory: {args.root}"
        for name in ("short_side", "max_side", "batch_size"):
            value = getattr(args, name)
            if value is not None and value < 1:
                return f"--{name.replace('_', '-')}: must be >= 1, got {value}"
        if args.max_images is not None and args.max_images < 1:
            return f"--max-images: must be >= 1, got {args.max_images}"
        if args.mask_threshold is not None:
            check_probability(args.mask_threshold, "--mask-threshold")
        for flag, path in (("--out", args.out), ("--results", args.results)):
            if path:
                check_output_file(path, flag)
    except UsageError as e:
        return str(e)
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
    from mnc_tf import console

    console.quiet_tensorflow(args.verbose)
    console.setup_logging(args.verbose)

    from mnc_tf.data import coco_dataset, sbd_dataset
    from mnc_tf.evaluation import COCOEvaluator, VOCEvaluator, evaluate_model, model_preprocessing

    try:
        if os.path.isdir(args.model):  # an mnc-export directory: its base or a version
            from mnc_tf.export import load_exported_model

            model = load_exported_model(args.model)
        else:
            model = load_mnc_model(args.model, "--model")
    except UsageError as e:
        return _error(str(e))
    except (FileNotFoundError, ValueError) as e:  # load_exported_model's, naming the path
        return _error(f"--model: {str(e).removeprefix('model: ')}")
    # The model's own preprocessing unless a flag overrides it.
    trained = model_preprocessing(model)
    short_side = args.short_side or trained["short_side"]
    max_side = args.max_side or trained["max_side"]
    mask_threshold = args.mask_threshold
    if mask_threshold is None:
        mask_threshold = trained["mask_threshold"]
    if mask_threshold is None:  # a model that does not say: the config's default
        from mnc_tf.config import PostprocessConfig

        mask_threshold = PostprocessConfig.mask_threshold
    if max_side < short_side:
        return _error(
            f"--max-side: must be >= the shorter side ({short_side}), got {max_side}"
            + ("" if args.max_side else " (the model's)")
        )
    print(
        f"input: shorter side {short_side} px, longer side <= {max_side} px"
        f"{'' if args.short_side or args.max_side else ' (as the model was trained)'}; "
        f"mask threshold {mask_threshold}"
    )

    common = {
        "batch_size": args.batch_size,
        "short_side": short_side,
        "max_side": max_side,
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
    if model.num_classes != info.num_classes:
        return _error(
            f"--model: the model has {model.num_classes} classes but the dataset has "
            f"{info.num_classes}"
        )

    evaluators = [COCOEvaluator(info.coco, info.category_ids, mask_threshold=mask_threshold)]
    if args.voc if args.voc is not None else args.dataset != "coco":
        evaluators.append(
            VOCEvaluator(
                info.num_classes, class_names=info.class_names, mask_threshold=mask_threshold
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
        mask_threshold=mask_threshold,
        max_batches=max_batches,
        log_summary=False,  # the table below is the output
    )
    print(format_table(metrics))
    if info.skipped or info.fixed:
        print(f"data: {info.report()}")
    try:
        if args.out:
            with open(args.out, "w") as f:
                json.dump(
                    {
                        # JSON has no NaN: metrics COCO cannot compute (no GT in a range) are null
                        "metrics": {k: None if math.isnan(v) else v for k, v in metrics.items()},
                        "model": args.model,
                        "dataset": args.annotations or args.root,
                        "num_images": info.num_images,
                        "short_side": short_side,
                        "max_side": max_side,
                        "mask_threshold": mask_threshold,
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
    except OSError as e:
        flag = "--out" if args.out and e.filename == args.out else "--results"
        return _error(f"{flag}: cannot write {e.filename}: {e.strerror}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
