"""Run an export in TF Serving's loader, in a process without Python.

TF Serving loads models with TensorFlow's Session-based loader (``tensorflow::LoadSavedModel``),
not with Python's ``tf.saved_model.load``. ``tools/saved_model_loader_check.c`` reaches that
loader through TensorFlow's C API: ``TF_LoadSessionFromSavedModel`` (tag ``serve``), the
signature defs read from the MetaGraphDef itself, ``TF_SessionRun`` per request, all requests
in one session. This module compiles it with the machine's C compiler against the headers and
shared libraries inside the installed TensorFlow wheel (``tensorflow/include``,
``libtensorflow_cc.so.2``, ``libtensorflow_framework.so.2``) and runs it::

    from mnc_tf.export import session_loader

    checker = session_loader.build("/tmp/checker")
    report, proc = session_loader.run(
        checker, "export/1", [("serving_default", "images", [open("cat.jpg", "rb").read()])],
        "/tmp/check")
    report["requests"][0]["outputs"]["detection_scores"]   # NumPy array from the C process

Needs a source checkout (``tools/`` is not part of the installed package) and ``gcc`` / ``cc``.
"""

import os
import re
import shlex
import shutil
import subprocess

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(_REPO, "tools", "saved_model_loader_check.c")
_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "uint8": np.uint8}


def tensorflow_dir():
    """The installed TensorFlow package directory (it holds the C API headers and libs)."""
    import tensorflow as tf

    return os.path.dirname(os.path.abspath(tf.__file__))


def build(out_dir):
    """Compile the checker into ``out_dir``; returns the executable's path.

    Raises ``RuntimeError`` with the compiler's output when it does not build.
    """
    if not os.path.isfile(SOURCE):
        raise RuntimeError(f"{SOURCE} is missing: the checker needs a source checkout of mnc_tf")
    tf_dir = tensorflow_dir()
    compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("gcc") or shutil.which("cc")]
    if compiler[0] is None:
        raise RuntimeError("no C compiler (gcc / cc) on PATH")
    libs = [os.path.join(tf_dir, name) for name in _LIBS]
    header = os.path.join(tf_dir, "include", "tensorflow", "c", "c_api.h")
    missing = [p for p in [*libs, header] if not os.path.isfile(p)]
    if missing:
        raise RuntimeError(f"the TensorFlow wheel lacks {missing}")
    binary = os.path.join(out_dir, "saved_model_loader_check")
    flags = ["-std=c11", "-O1", "-Wall", "-Wextra"]
    include = ["-I", os.path.join(tf_dir, "include")]
    command = [*compiler, *flags, *include, SOURCE, *libs, f"-Wl,-rpath,{tf_dir}", "-o", binary]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")
    return binary


_LIBS = ("libtensorflow_cc.so.2", "libtensorflow_framework.so.2")


def write_request(path, signature, input_key, value):
    """One request file: ``value`` is a list of bytes (string input) or a NumPy array."""
    with open(path, "wb") as f:
        if isinstance(value, (list, tuple)):
            f.write(f"{signature} {input_key} string 1 {len(value)}\n".encode())
            for element in value:
                f.write(f"{len(element)}\n".encode())
                f.write(element)
        else:
            value = np.ascontiguousarray(value)
            dtype = {np.dtype(v): k for k, v in _DTYPES.items()}[value.dtype]
            dims = " ".join(str(d) for d in value.shape)
            f.write(f"{signature} {input_key} {dtype} {value.ndim} {dims}\n".encode())
            f.write(value.tobytes())


def run(binary, saved_model_dir, requests, work_dir, timeout=600):
    """Run ``requests`` (a list of ``(signature, input_key, value)``) in one C process.

    Returns:
      ``(report, proc)``: ``report = {"loaded": bool, "load_error": str | None,
      "signatures": {key: {"inputs": {k: (tensor, dtype)}, "outputs": {...}}},
      "requests": [{"signature", "ok", "ms", "code", "message", "outputs": {key: ndarray}}]}``
      (``ms`` on success, ``code`` / ``message`` on failure).
    """
    out_dir = os.path.join(work_dir, "outputs")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, (signature, input_key, value) in enumerate(requests):
        paths.append(os.path.join(work_dir, f"request_{i}"))
        write_request(paths[-1], signature, input_key, value)
    # The C process gets no Python-related environment at all.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [binary, str(saved_model_dir), out_dir, *paths],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        timeout=timeout,
    )
    return parse(proc.stdout), proc


def parse(stdout):
    """The checker's stdout → the report described in :func:`run`."""
    report = {"loaded": False, "load_error": None, "signatures": {}, "requests": []}
    for line in stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "loaded":
            report["loaded"] = True
        elif kind == "load":
            report["load_error"] = rest
        elif kind == "signature":
            key, rest = rest.split(" ", 1)
            inputs, _, outputs = rest.partition(" outputs:")
            entries = lambda text: {  # noqa: E731
                k: (t, d) for k, t, d in re.findall(r"(\S+)=(\S+) (\S+)", text)
            }
            report["signatures"][key] = {
                "inputs": entries(inputs.partition("inputs:")[2]),
                "outputs": entries(outputs),
            }
        elif kind == "request":
            index, signature, status, *message = rest.split(" ", 4)
            if int(index) != len(report["requests"]):
                raise ValueError(f"checker output out of order: {line!r}")
            entry = {"signature": signature, "ok": status == "OK", "outputs": {}}
            if status == "OK" and message and message[0].startswith("ms="):
                entry["ms"] = float(message[0][3:])  # TF_SessionRun's wall-clock time
            if status == "ERROR":
                entry["code"] = message[0]
                entry["message"] = message[1] if len(message) > 1 else ""
            report["requests"].append(entry)
        elif kind == "output":
            index, key, dtype, dims, path = rest.split(" ")[:5]
            shape = [int(d) for d in dims.strip("[]").split(",") if d]
            array = np.fromfile(path, _DTYPES[dtype]).reshape(shape)
            report["requests"][int(index)]["outputs"][key] = array
    return report


def _compare_with_python(version_dir, requests, report):
    """Max |C − Python| per request and output (Python: ``tf.saved_model.load``)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(version_dir)
    diffs = []
    for (signature, input_key, value), result in zip(requests, report["requests"], strict=True):
        if not result["ok"]:
            diffs.append(None)
            continue
        fn = loaded.signatures[signature]
        feed = tf.constant(value) if isinstance(value, list) else value
        expected = {k: v.numpy() for k, v in fn(**{input_key: feed}).items()}
        diffs.append(
            {
                key: float(np.max(np.abs(result["outputs"][key].astype(np.float64) - ref)))
                if ref.size
                else 0.0
                for key, ref in expected.items()
            }
        )
    return diffs


def main(argv=None):
    """``python -m mnc_tf.export.session_loader EXPORT IMAGE...``: every signature of an export
    on each image in TF Serving's loader (the C program), compared with Python's loader."""
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m mnc_tf.export.session_loader",
        description="Run an export's signatures in TensorFlow's Session loader (C API, no "
        "Python) and compare with tf.saved_model.load.",
    )
    parser.add_argument("export", help="SavedModel version directory or export base directory")
    parser.add_argument("images", nargs="+", help="encoded image files (JPEG, PNG, ...)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |C - Python|")
    parser.add_argument("--checker", help="an already built checker (default: build one now)")
    parser.add_argument("--verbose", action="store_true", help="TensorFlow's own log lines too")
    args = parser.parse_args(argv)

    from mnc_tf import console

    console.quiet_tensorflow(args.verbose)  # before TensorFlow is imported (banner, PredictCost)
    import tensorflow as tf

    from mnc_tf.export.serving import latest_version_dir

    version_dir = latest_version_dir(args.export)
    requests = []
    for path in args.images:
        with open(path, "rb") as f:
            encoded = f.read()
        pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
        feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
        features = tf.train.Features(feature={"image/encoded": feature})
        example = tf.train.Example(features=features).SerializeToString()
        requests += [
            ("serving_default", "images", [encoded]),
            ("serving_image_tensor", "images", pixels[None]),
            ("serving_tf_example", "examples", [example]),
        ]
    with tempfile.TemporaryDirectory(prefix="session_loader_") as work:
        binary = args.checker or build(work)
        report, proc = run(binary, version_dir, requests, work)
        print(proc.stdout, end="")
        if not report["loaded"] or proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        diffs = _compare_with_python(version_dir, requests, report)
    worst = 0.0
    for (signature, _, _), diff in zip(requests, diffs, strict=True):
        if diff is None:
            worst = float("inf")
            continue
        worst = max(worst, max(diff.values()))
        print(f"compare {signature}: max |C - Python| " + json.dumps(diff))
    ok = worst <= args.tolerance
    print(f"{'OK' if ok else 'FAILED'}: {len(requests)} requests; largest difference {worst:.3g}")
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
