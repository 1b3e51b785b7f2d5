"""``mnc-export``: a trained ``.keras`` model → SavedModel for TF Serving.

    mnc-export --model model.keras --out export/ [--version 1] [--overwrite]

Writes ``export/<version>/`` with the signatures ``serving_default`` (encoded image bytes),
``serving_image_tensor`` (uint8 images) and ``serving_tf_example``, in stock TensorFlow ops
only (see :mod:`mnc_tf.export.serving`). Serve it with::

    docker run -p 8501:8501 --mount type=bind,source=$PWD/export,target=/models/mnc \\
        -e MODEL_NAME=mnc -t tensorflow/serving
"""

import argparse
import os
import sys
import time

from mnc_tf.cli._common import (
    UsageError,
    check_keras_file,
    check_output_dir,
    error,
    load_mnc_model,
)

PROG = "mnc-export"


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Export an MNC .keras model as a SavedModel for TF Serving."
    )
    parser.add_argument("--model", required=True, help="trained model (.keras file)")
    parser.add_argument(
        "--out", required=True, help="base directory; the SavedModel goes to OUT/VERSION"
    )
    parser.add_argument("--version", type=int, default=1, help="version number (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT/VERSION")
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="precision the SavedModel computes in (outputs stay float32; default float32)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ log lines and DEBUG log records",
    )
    return parser


def _error(message):
    error(PROG, message)


def main(argv=None):
    """Entry point; returns the exit status (0 ok, 2 usage / model / output error)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.version < 1:
        _error(f"--version: expected a positive integer, got {args.version}")
        return 2
    target = os.path.join(args.out, str(args.version))
    try:
        check_keras_file(args.model, "--model")
        check_output_dir(args.out, "--out")
        if os.path.exists(target) and not args.overwrite:
            raise UsageError(
                f"--out: {target} already exists; pass --overwrite or another --version"
            )
    except UsageError as e:
        _error(str(e))
        return 2

    from mnc_tf import console

    console.quiet_tensorflow(args.verbose)
    console.setup_logging(args.verbose)

    from mnc_tf.export.serving import SIGNATURES, export_serving

    try:
        model = load_mnc_model(args.model, "--model")
    except UsageError as e:
        _error(str(e))
        return 2
    start = time.perf_counter()
    try:
        path = export_serving(
            model,
            args.out,
            version=args.version,
            overwrite=args.overwrite,
            precision=args.precision,
        )
    except (FileExistsError, ValueError) as e:
        _error(str(e))
        return 2
    except OSError as e:
        _error(f"--out: cannot write {e.filename or args.out}: {e.strerror}")
        return 2
    print(
        f"SavedModel written to {path} in {time.perf_counter() - start:.1f} s; "
        f"signatures: {', '.join(SIGNATURES)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
