"""Lazy loading of the compiled op library ``mnc_tf/ops/_mnc_ops.so``.

The library is built by ``pip install --no-build-isolation -e .`` (setup.py calls
``custom_ops/build.py``) or directly by ``python custom_ops/build.py``.
"""

from __future__ import annotations

import functools
import os

import tensorflow as tf

LIBRARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_mnc_ops.so")

_BUILD_HINT = (
    "Build it from the repository root with `pip install --no-build-isolation -e .` "
    "or `python custom_ops/build.py`."
)


class OpLibraryNotFoundError(ImportError):
    """The custom op library is missing or cannot be loaded."""


@functools.cache
def load_library():
    """Loads the op library once and returns its generated op module.

    Raises:
      OpLibraryNotFoundError: the library is missing, or was built for another
        TensorFlow (the message says how to rebuild it).
    """
    if not os.path.exists(LIBRARY_PATH):
        raise OpLibraryNotFoundError(
            f"mnc_tf custom op library not found at {LIBRARY_PATH}. {_BUILD_HINT}"
        )
    try:
        return tf.load_op_library(LIBRARY_PATH)
    except tf.errors.NotFoundError as err:  # dlopen failure: stale or foreign build
        raise OpLibraryNotFoundError(
            f"mnc_tf custom op library at {LIBRARY_PATH} failed to load "
            f"(built for another TensorFlow or toolchain?): {err}. Rebuild it: {_BUILD_HINT}"
        ) from err


def library_available() -> bool:
    """True when the op library loads."""
    try:
        load_library()
    except OpLibraryNotFoundError:
        return False
    return True
