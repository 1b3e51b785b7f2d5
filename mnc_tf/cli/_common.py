"""Argument checks shared by the command-line tools: one line naming the argument, what was
expected and what was found; no traceback (exit status 2)."""

from __future__ import annotations

import os
import sys
import zipfile


class UsageError(Exception):
    """A bad argument; ``str(error)`` is the one-line message (it names the argument)."""


def error(prog: str, message: str) -> int:
    """Print ``prog: error: message`` on stderr; returns the exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def check_probability(value, flag, low_open=True, high_open=True):
    """``value`` must be inside (0, 1) (ends included when not ``*_open``)."""
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise UsageError(f"{flag}: expected a value in {interval}, got {value}")


def check_input_file(path, flag, what="a file"):
    """``path`` must be an existing, readable regular file (``what``: "a file", "an image
    file", ... for the message)."""
    if not os.path.exists(path):
        raise UsageError(f"{flag}: no such file: {path}")
    if os.path.isdir(path):
        raise UsageError(f"{flag}: expected {what}, got the directory {path}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{flag}: {path} is not readable")


def check_keras_file(path, flag="--model"):
    """``path`` must be a ``.keras`` file (a zip archive written by ``model.save``)."""
    check_input_file(path, flag, what="a .keras file")
    if not zipfile.is_zipfile(path):
        raise UsageError(
            f"{flag}: expected a .keras file (the zip archive model.save writes); could not "
            f"load {path}: it is not a zip archive"
        )


def load_mnc_model(path, flag="--model"):
    """Load an :class:`mnc_tf.MNC` ``.keras`` file or raise :class:`UsageError`."""
    check_keras_file(path, flag)
    from mnc_tf.export.predictor import load_keras_model

    try:
        model = load_keras_model(path)
    except (FileNotFoundError, ValueError) as e:
        text = str(e)
        raise UsageError(
            f"{flag}: {text[len('model:') :].strip() if text.startswith('model:') else text}"
        ) from None
    check_mnc_model(model, path, flag)
    return model


def check_mnc_model(model, path, flag="--model"):
    """A Keras model that is not an MNC (no detections to evaluate) is a usage error."""
    from mnc_tf.modeling.mnc import MNC

    if not isinstance(model, MNC):
        raise UsageError(
            f"{flag}: expected an MNC model (saved from mnc_tf.MNC), got a "
            f"{type(model).__name__} in {path}"
        )


def check_output_file(path, flag):
    """``path`` will be written: not a directory, its directory exists and is writable."""
    if os.path.isdir(path):
        raise UsageError(f"{flag}: expected a file name, got the directory {path}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{flag}: the directory {parent} of {path} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag}: {path} is not writable")


def check_output_dir(path, flag):
    """``path`` is a directory to create or fill: not an existing file; creatable/writable."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag}: expected a directory, got the existing file {path}")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):  # the nearest existing ancestor must be writable
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"{flag}: cannot create {path}: {probe} is a file")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{flag}: cannot write into {probe} (permission denied)")


# Leading bytes of the formats tf.io.decode_image reads (what the export's serving_default takes).
_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


def image_format(path):
    """``"JPEG"``, ``"PNG"``, ``"GIF"``, ``"BMP"`` or ``"WebP"`` from the file's first bytes;
    ``None`` for anything else."""
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def check_image_file(path, flag="IMAGE"):
    """``path`` must be a readable file that starts like a JPEG/PNG/GIF/BMP/WebP image."""
    check_input_file(path, flag, what="an image file")
    if image_format(path) is None:
        with open(path, "rb") as f:
            head = f.read(12)
        raise UsageError(
            f"{flag}: expected a JPEG, PNG, GIF, BMP or WebP image, got {path} "
            f"(starts with {head!r})"
            if head
            else f"{flag}: expected a JPEG, PNG, GIF, BMP or WebP image, got the empty file {path}"
        )
