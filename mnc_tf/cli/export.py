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
    return parser


def _error(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)


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
    if not os.path.exists(args.model):
        _error(f"--model: no such file: {args.model}")
        return 2
    target = os.path.join(args.out, str(args.version))
    if os.path.exists(target) and not args.overwrite:
        _error(f"--out: {target} already exists; pass --overwrite or another --version")
        return 2

    from mnc_tf.export.predictor import load_keras_model
    from mnc_tf.export.serving import SIGNATURES, export_serving

    try:
        model = load_keras_model(args.model)
    except (FileNotFoundError, ValueError) as e:
        message = str(e)
        _error(message.replace("model:", "--model:", 1))
        return 2
    start = time.perf_counter()
    try:
        path = export_serving(model, args.out, version=args.version, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as e:
        _error(str(e))
        return 2
    print(
        f"SavedModel written to {path} in {time.perf_counter() - start:.1f} s; "
        f"signatures: {', '.join(SIGNATURES)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
