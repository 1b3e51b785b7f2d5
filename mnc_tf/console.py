"""A quiet console for the command-line tools and examples (``--verbose`` brings the detail back).

What a user of ``mnc-train`` / ``mnc-eval`` / ``mnc-predict`` / ``mnc-export`` sees by default:
our own log lines and results, not TensorFlow's start-up banner or pycocotools' prints.

- :func:`quiet_tensorflow` (call it before anything imports TensorFlow) sets
  ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user set it — TensorFlow's C++ INFO and WARNING lines are
  hidden, errors are shown — and imports TensorFlow with stderr captured, because TensorFlow's
  shared libraries log their banner (``oneDNN custom operations are on``, ``Could not find cuda
  drivers``, ``failed call to cuInit`` on a machine without a GPU driver, each library once)
  *before* that variable is read. The captured INFO/WARNING lines and the cuInit line go to the
  ``mnc_tf`` logger at DEBUG (``train.log`` keeps them); anything else is written back to
  stderr unchanged. With ``verbose=True``, or when ``TF_CPP_MIN_LOG_LEVEL`` is already set,
  nothing is changed or filtered.
- :func:`setup_logging` prints ``mnc_tf`` log records on stderr (INFO, or DEBUG with verbose).
- :func:`redirect_prints` sends what a chatty library prints (pycocotools) to a logger.

This module imports neither TensorFlow nor Keras at import time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile

TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
# 2: C++ errors and above. The one C++ WARNING line our tools caused in practice is grappler's
# "Error in PredictCost() for the op: ... CropAndResize" (1.5 KB, TensorFlow issue #56904: the
# cost model cannot size a crop_and_resize whose number of boxes is only known at run time, as
# in mask voting); it is harmless and hidden at this level.
QUIET_TF_LOG_LEVEL = "2"

logger = logging.getLogger("mnc_tf")

# glog/absl line prefix: severity letter, MMDD, time, thread id, file:line]
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_PRE_INIT = "WARNING: All log messages before absl::InitializeLog() is called"
_CONTINUATIONS = ("To enable the following instructions:",)
# Errors that only say "this machine has no (usable) NVIDIA driver" when TensorFlow is a CUDA
# build; TensorFlow then runs on the CPU, which is what the user asked for on such a machine.
_NO_GPU_ERRORS = ("failed call to cuInit",)


def is_startup_noise(line: str) -> bool:
    """True for a TensorFlow start-up log line that :func:`quiet_tensorflow` keeps off stderr."""
    text = line.rstrip("\n")
    if not text.strip():
        return False
    if text.startswith(_PRE_INIT) or text.startswith(_CONTINUATIONS):
        return True
    match = _ABSL_LINE.match(text)
    if not match:
        return False
    if match.group(1) in "IW":
        return True
    return any(s in text for s in _NO_GPU_ERRORS)


@contextlib.contextmanager
def _captured_stderr_fd(captured: list):
    """Redirect file descriptor 2 (C++ logging writes there directly) into a temporary file;
    the captured text is appended to ``captured`` on exit."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except Exception:  # noqa: BLE001 - never lose the real stderr over a flush
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", errors="replace"))


def quiet_tensorflow(verbose: bool = False) -> bool:
    """Import TensorFlow without its start-up banner; returns True if the console is quiet.

    Call before anything imports TensorFlow (the CLIs call it right after parsing their
    arguments). Does nothing with ``verbose=True`` or when the user set
    ``TF_CPP_MIN_LOG_LEVEL`` (their choice wins). If TensorFlow is already imported only the
    environment variable is set (it still applies to messages logged from now on).
    """
    if verbose or TF_LOG_LEVEL_ENV in os.environ:
        return False
    os.environ[TF_LOG_LEVEL_ENV] = QUIET_TF_LOG_LEVEL
    _quiet_python_loggers()
    if "tensorflow" in sys.modules:
        return True
    captured = []
    try:
        with _captured_stderr_fd(captured):
            import tensorflow as tf

            # Device discovery is where a CUDA build reports a missing driver (cuInit); it does
            # not initialise the runtime, so logical devices / strategies can still be set up.
            tf.config.list_physical_devices()
    finally:
        _replay("".join(captured))
    return True


class _DropNoise(logging.Filter):
    """Drops TensorFlow's Python-side messages that carry no news for a user of our tools."""

    NOISE = (
        # SavedModel: resource captures get renamed; harmless for every loader (tested).
        "with unsupported characters which will be renamed",
    )

    def filter(self, record):
        return not any(n in record.getMessage() for n in self.NOISE)


def _quiet_python_loggers():
    """TensorFlow's and absl's Python loggers at WARNING (their INFO lines, e.g. 'Sharding
    callback duration' on every checkpoint or 'Assets written to', reach the console whenever
    a script calls ``logging.basicConfig(level=INFO)``), minus known noise."""
    for name in ("absl", "tensorflow"):
        log = logging.getLogger(name)
        if log.level == logging.NOTSET or log.level < logging.WARNING:
            log.setLevel(logging.WARNING)
        if not any(isinstance(f, _DropNoise) for f in log.filters):
            log.addFilter(_DropNoise())


def _replay(text: str):
    for line in text.splitlines(keepends=True):
        if is_startup_noise(line):
            logger.debug("tensorflow: %s", line.rstrip("\n"))
        else:
            sys.stderr.write(line)
    sys.stderr.flush()


def setup_logging(verbose: bool = False, stream=None):
    """``mnc_tf`` log records on ``stream`` (stderr): INFO and up, DEBUG and up with verbose.

    Idempotent (a second call replaces the handler it added). Returns the handler.
    """
    root = logging.getLogger("mnc_tf")
    root.setLevel(logging.DEBUG)
    root.propagate = False  # absl may have configured the root logger: print once
    for h in [h for h in root.handlers if getattr(h, "_mnc_console", False)]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler._mnc_console = True
    root.addHandler(handler)
    return handler


@contextlib.contextmanager
def redirect_prints(target_logger: logging.Logger, level: int = logging.DEBUG, prefix: str = ""):
    """Capture ``print`` output (``sys.stdout``) inside the block and log it as one record."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield buffer
    finally:
        text = buffer.getvalue().rstrip()
        if text:
            target_logger.log(level, "%s%s", prefix, text)
