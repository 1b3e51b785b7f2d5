"""SavedModel export of the whole MNC inference pipeline, for TF Serving.

What is exported: decoding → :func:`mnc_tf.data.preprocess.resize_image` (the model's
``short_side`` / ``max_side``) → zero-padding to a common batch size → every stage of the
cascade, NMS and mask voting (the model's own ``call``) → boxes mapped back to the pixels of
the *original* image. Everything is stock TensorFlow: the graph is traced inside
``mnc_tf.ops.roi_warp_implementation("reference")``, so the custom ``MncRoiWarp`` op is
replaced by its stock-op equivalent and an unmodified ``tensorflow/serving`` image (or any
Python process with plain TensorFlow and without ``mnc_tf``) can run the export.

The SavedModel tracks the ``tf.Variable`` s its graphs capture, not the Keras model: that is
what TF Serving's Session loader (``tensorflow::LoadSavedModel``) needs to restore them (see
:func:`export_serving`). ``tests/export/test_session_loader.py`` runs every signature in that
loader through TensorFlow's C API (``tools/saved_model_loader_check.c``, no Python).

Layout (the one TF Serving watches; the highest integer sub-directory is served)::

    export_dir/
      <version>/
        saved_model.pb
        variables/
        assets/labels.txt          one line per class: "<category_id>\\t<class name>"
        assets/export_info.json    short/max side, mask size, labels, signature names

Signatures (inputs → the same outputs for all three):

=========================  =====================================================================
``serving_default``        ``images``: string ``[B]`` encoded JPEG / PNG / GIF / BMP / WebP
                           / JPEG XL bytes (whatever ``tf.io.decode_image`` reads);
                           grayscale and RGBA are converted to RGB, GIFs use the first frame.
``serving_image_tensor``   ``images``: uint8 ``[B, H, W, 3]`` RGB (the signature says
                           ``[B, H, W, C]``; ``C = 3`` is checked in the graph: the Session
                           loader does not check a fed tensor against the declared shape).
``serving_tf_example``     ``examples``: string ``[B]`` serialized ``tf.train.Example`` with the
                           encoded image in the bytes feature ``image/encoded``.
=========================  =====================================================================

Outputs (``K`` = the model's ``max_detections``, ``m`` = its mask size):

======================  =========================  ==============================================
``detection_boxes``     float32 ``[B, K, 4]``      ``y1, x1, y2, x2`` in original-image pixels
``detection_scores``    float32 ``[B, K]``         instance class probability
``detection_classes``   int32 ``[B, K]``           dataset category ids (``model.category_ids``),
                                                   else contiguous labels ``1..num_classes``;
                                                   0 on padding rows
``detection_masks``     float32 ``[B, K, m, m]``   soft box-relative masks; paste them with
                                                   ``mnc_tf.core.masks.paste_masks``
``num_detections``      int32 ``[B]``              valid rows per image
``image_info``          float32 ``[B, 4, 2]``      original ``(h, w)``; resized ``(h, w)``;
                                                   scale ``(sy, sx)``; offset ``(0, 0)``
======================  =========================  ==============================================

Batches of encoded images may mix image sizes: each image is decoded and resized on its own and
the batch is zero-padded bottom/right to its largest resized image (the padded area is marked
invalid through ``image_info``, exactly as in the training pipeline). Because the backbone
sees the padding near the border, an image's detections in a mixed batch can differ slightly
from the same image sent alone. ``serving_image_tensor`` takes one dense tensor, so all its
images have one size.

Besides the signatures, the SavedModel holds the ``tf.function`` ``infer`` (the model on
already-resized images; ``mnc-eval --model export/`` uses it). It is no signature, so servers
do not expose it.

Bad input raises ``InvalidArgumentError`` whose message names the signature, the input and
the index of the first bad element, e.g. ``assertion failed: [serving_default input images:
element] [1] [is a zero-size] [PNG] [image; ...]``: an empty batch, an empty string, bytes
that are no image format ``tf.io.decode_image`` reads, a PNG / GIF / BMP whose header says
0 × 0, image bytes the decoder rejects (truncated or corrupt), a uint8 tensor without 3
channels or of zero size, bytes that do not parse as a ``tf.train.Example``, an Example
without ``image/encoded``. Decoder and parser failures are caught by running the per-element
work in a ``tf.data`` pipeline with ``ignore_errors`` and reporting the elements it dropped
(a graph cannot catch an op's error otherwise). The serving process keeps running.
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from mnc_tf.export.signatures import (  # noqa: F401 - re-exported: the export's public names
    INFER_FUNCTION,
    OUTPUT_KEYS,
    SIGNATURE_ENCODED,
    SIGNATURE_IMAGE_TENSOR,
    SIGNATURE_TF_EXAMPLE,
    SIGNATURES,
    TF_EXAMPLE_IMAGE_KEY,
    build_serving_functions,
    label_map,
    model_settings,
)
from mnc_tf.io_utils import atomic_path

LABELS_FILENAME = "labels.txt"
INFO_FILENAME = "export_info.json"


def export_serving(
    model, export_dir, version=1, *, overwrite=False, roi_warp="reference", precision="float32"
):
    """Write ``model``'s full inference pipeline as a SavedModel for TF Serving.

    The SavedModel lands in ``export_dir/<version>/`` (see the module docstring for the
    layout, signatures and outputs). It is written to a hidden staging directory first and
    renamed into place, so a TF Serving process watching ``export_dir`` never sees a
    half-written version.

    Args:
      model: an MNC ``keras.Model``: its config's resize sides are baked into the graph and
        recorded in ``assets/export_info.json`` with its mask size and mask / score
        thresholds (:func:`~mnc_tf.export.signatures.model_settings`); ``class_names`` /
        ``category_ids`` are stored as ``assets/labels.txt``.
      export_dir: the model's base directory (the one TF Serving's ``--model_base_path``
        points at); created if missing.
      version: positive int, the sub-directory name.
      overwrite: replace an existing ``export_dir/<version>``; otherwise that is an error.
      roi_warp: RoI warping implementation traced into the graph. Keep ``"reference"``
        (stock ops) for anything that must load without the ``mnc_tf`` op library.
      precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``: the dtype the exported
        graph computes in, with its variables stored in it
        (:func:`mnc_tf.precision.with_precision`); inputs and outputs are unchanged.

    Returns:
      The path of the written version directory.

    Raises:
      ValueError: bad ``version`` or a model without the attributes above.
      FileExistsError: ``export_dir/<version>`` exists and ``overwrite`` is False.
      RuntimeError: a non-stock ``Mnc*`` op ended up in the graph with ``roi_warp="reference"``.
    """
    from mnc_tf.ops import roi_warp_implementation

    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected a positive int, got {version!r}")
    export_dir = os.fspath(export_dir)
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(
            f"export_dir: {target} already exists; pass overwrite=True (mnc-export --overwrite) "
            "or choose another version"
        )
    from mnc_tf.precision import check_precision, with_precision

    check_precision(precision)
    category_ids, class_names = label_map(model)
    settings = model_settings(model)
    from mnc_tf.modeling.mnc import MNC

    if isinstance(model, MNC):
        model = with_precision(model, precision)
    elif precision != "float32":
        raise ValueError(f"precision: {precision!r} needs an mnc_tf.MNC model")
    functions = build_serving_functions(model)
    os.makedirs(export_dir, exist_ok=True)
    # Hidden, non-integer name: TF Serving only loads integer sub-directories.
    staging = tempfile.mkdtemp(prefix=f".staging-{version}-", dir=export_dir)
    try:
        assets_src = os.path.join(staging, "_assets_src")
        os.makedirs(assets_src)
        labels_path = os.path.join(assets_src, LABELS_FILENAME)
        with open(labels_path, "w", encoding="utf-8") as f:
            for category_id, name in zip(category_ids, class_names, strict=True):
                f.write(f"{category_id}\t{name}\n")
        info_path = os.path.join(assets_src, INFO_FILENAME)
        with open(info_path, "w", encoding="utf-8") as f:
            json.dump(
                {
                    **settings,  # short/max side, mask size, mask and score thresholds
                    "precision": precision,
                    "category_ids": category_ids,
                    "class_names": class_names,
                    "signatures": list(SIGNATURES),
                    "outputs": list(OUTPUT_KEYS),
                },
                f,
                indent=2,
            )
        with roi_warp_implementation(roi_warp):
            traced = {name: fn.get_concrete_function() for name, fn in functions.items()}
        module = tf.Module()
        # The tf.Variables the traced graphs read, not the Keras variables wrapping them:
        # tracking Keras 3 variables (or the Keras model) writes a SavedModel that Python's
        # tf.saved_model.load restores but TF Serving's Session loader does not ("Could not
        # find variable ..."; keras-team/keras#20095). keras.export.ExportArchive does the
        # same; tests/export/test_session_loader.py checks it with the C API loader.
        module.captured_variables = _captured_variables(traced.values())
        module.labels_asset = tf.saved_model.Asset(labels_path)
        module.info_asset = tf.saved_model.Asset(info_path)
        setattr(module, INFER_FUNCTION, functions[INFER_FUNCTION])
        signatures = {name: traced[name] for name in SIGNATURES}
        # Written inside the staging directory, renamed to `target` once complete.
        with atomic_path(target, temp_dir=staging, temp_prefix="model-") as saved:
            with roi_warp_implementation(roi_warp):  # saving may trace `infer` once more
                tf.saved_model.save(module, saved, signatures=signatures)
            if roi_warp == "reference":
                custom = custom_ops_in_saved_model(saved)
                if custom:
                    raise RuntimeError(
                        f"export: the serving graph still contains custom ops "
                        f"{sorted(custom)}; a layer ignored roi_warp_implementation('reference')"
                    )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _captured_variables(concrete_functions):
    """The ``tf.Variable`` s the traced functions read, each once, in first-use order."""
    seen, variables = set(), []
    for function in concrete_functions:
        for variable in function.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables


def custom_ops_in_saved_model(saved_model_dir, prefix="Mnc"):
    """Names of ops starting with ``prefix`` anywhere in a SavedModel's graphs.

    Looks at the top-level graph and every function of its library (the signatures' bodies,
    ``map_fn`` / ``while`` bodies), i.e. at what a loader must be able to resolve.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    found = set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        nodes = list(graph.node)
        for function in graph.library.function:
            nodes.extend(function.node_def)
        found.update(node.op for node in nodes if node.op.startswith(prefix))
    return found


def latest_version_dir(path):
    """Resolve a SavedModel path given as the version dir or the TF Serving base dir.

    Returns ``path`` itself when it holds ``saved_model.pb``, else its highest integer
    sub-directory holding one; raises ``FileNotFoundError`` naming ``path`` otherwise.
    """
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = []
    if os.path.isdir(path):
        for entry in os.listdir(path):
            if entry.isdigit() and os.path.isfile(os.path.join(path, entry, "saved_model.pb")):
                versions.append(int(entry))
    if not versions:
        raise FileNotFoundError(
            f"{path}: not a SavedModel directory (no saved_model.pb in it or in an integer "
            "version sub-directory)"
        )
    return os.path.join(path, str(max(versions)))
