"""``mnc-train``: train (or resume) an MNC model from an experiment config.

    mnc-train --config configs/shapes_tiny_mnc5.yaml --model-dir runs/shapes
    mnc-train --config configs/voc2012_vgg16_mnc5.yaml --set data.root=/data/SBD \\
        --set model.backbone_options.weights=/weights/vgg16.h5 --model-dir runs/voc

``--set section.key=value`` overrides any config key (repeatable; values are parsed as YAML
and coerced to the key's type). Running the same command again resumes from the latest
checkpoint in ``--model-dir``. Multi-worker training: start the same command on every host
with that host's ``TF_CONFIG`` (see ``mnc_tf.training.strategy``).

Exit status: 0 done, 2 bad arguments or config (the message names the key), 1 training failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

PROG = "mnc-train"


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train an MNC instance segmentation model from a YAML experiment config; "
        "checkpoints, resumes, logs to TensorBoard and exports a SavedModel.",
    )
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set model.optimizer.total_steps=1000 (repeatable)",
    )
    parser.add_argument(
        "--model-dir",
        default=None,
        help="output directory (default: runs/<config name>); reuse it to resume",
    )
    parser.add_argument(
        "--strategy",
        choices=("auto", "default", "one_device", "mirrored", "multi_worker"),
        default=None,
        help="tf.distribute strategy (default: the config's train.strategy, 'auto')",
    )
    parser.add_argument(
        "--mixed-precision",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        default=None,
        help="Keras dtype policy (default: the config's train.mixed_precision)",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        metavar="N",
        help="split the CPU into N logical devices (to run 'mirrored' without GPUs)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML and exit",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ log lines, DEBUG log records and pycocotools' full tables",
    )
    return parser


def _error(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv=None):
    """Entry point; returns the exit status (see the module docstring)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage + message
        return int(e.code or 0)
    if os.path.isdir(args.config):
        _error(f"--config: expected a YAML file, got the directory {args.config}")
        return 2
    if not os.path.isfile(args.config):
        _error(f"--config: no such file: {args.config}")
        return 2
    if args.cpu_devices is not None and args.cpu_devices < 1:
        _error(f"--cpu-devices: expected N >= 1, got {args.cpu_devices}")
        return 2
    overrides = list(args.overrides)
    if args.strategy:
        overrides.append(f"train.strategy={args.strategy}")
    if args.mixed_precision:
        overrides.append(f"train.mixed_precision={args.mixed_precision}")

    from mnc_tf.training.config import load_config

    try:
        config = load_config(args.config, overrides)
    except ValueError as e:
        message = str(e)
        # Errors in the file name the file; --set errors say "--set" themselves.
        named = message.startswith("--set") or args.config in message
        _error(message if named else f"{args.config}: {message}")
        return 2
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    model_dir = args.model_dir or os.path.join(
        "runs", os.path.splitext(os.path.basename(args.config))[0]
    )
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        _error(f"--model-dir: expected a directory, got the file {model_dir}")
        return 2
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as e:
        _error(f"--model-dir: cannot create {model_dir}: {e.strerror}")
        return 2
    if not os.access(model_dir, os.W_OK):
        _error(f"--model-dir: {model_dir} is not writable")
        return 2
    _setup_logging(model_dir, args.verbose)
    from mnc_tf import console

    console.quiet_tensorflow(args.verbose)  # its hidden start-up lines go to train.log

    if args.cpu_devices:
        from mnc_tf.training.strategy import split_cpu

        split_cpu(args.cpu_devices)  # before any TF op

    from mnc_tf.training.train import train

    try:
        train(config, model_dir)
    except ValueError as e:
        # Configuration problems found while building data/model (paths, class counts); the
        # traceback goes to train.log for the case where it is a bug rather than bad input.
        logging.getLogger("mnc_tf.training").debug("mnc-train failed", exc_info=True)
        _error(str(e))
        return 2
    return 0


def _setup_logging(model_dir, verbose=False):
    """mnc_tf's INFO lines on stderr (DEBUG with ``verbose``), DEBUG and up in
    ``model_dir/train.log``."""
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s")
    root = logging.getLogger("mnc_tf")
    root.setLevel(logging.DEBUG)
    root.propagate = False  # absl may have configured the root logger: print once
    for h in [h for h in root.handlers if getattr(h, "_mnc_train", False)]:
        root.removeHandler(h)  # main() called twice in one process (tests): no duplicates
        h.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    logfile = logging.FileHandler(os.path.join(model_dir, "train.log"))
    logfile.setLevel(logging.DEBUG)
    for handler in (console, logfile):
        handler.setFormatter(fmt)
        handler._mnc_train = True
        root.addHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
