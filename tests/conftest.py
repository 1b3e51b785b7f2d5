"""Shared pytest setup: quiet TF logs and a fresh Keras session per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_keras_session():
    yield
    keras.backend.clear_session()


@pytest.fixture(autouse=True)
def _restore_mnc_tf_logging():
    """A CLI's main() run in-process (mnc_tf.console.setup_logging) gives the ``mnc_tf`` logger
    its own handler and stops propagation; undo that so later tests' caplog sees records."""
    yield
    root = logging.getLogger("mnc_tf")
    for handler in [h for h in root.handlers if getattr(h, "_mnc_console", False)]:
        root.removeHandler(handler)
    root.propagate = True
    root.setLevel(logging.NOTSET)
