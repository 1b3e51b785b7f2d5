"""RoI warping: the differentiable crop of MNC stages 2 and 3.

Two implementations with one sampling convention (formula at the top of
``custom_ops/roi_warp/roi_warp_kernels.cc``):

- ``roi_warp``: the fused custom op ``MncRoiWarp`` (CPU and CUDA kernels, gradients for
  features and boxes via ``MncRoiWarpGrad``).
- ``roi_warp_reference``: ``tf.image.crop_and_resize`` on boxes normalised by
  ``max(H - 1, 1)`` / ``max(W - 1, 1)``, then ``tf.nn.max_pool2d``. Stock ops only: this is
  the path exported SavedModels use, and the reference the op is tested against.

``roi_warp_implementation`` switches which one ``mnc_tf.layers.RoIWarp`` uses.
"""

from __future__ import annotations

import contextlib
import logging
import numbers

import tensorflow as tf

from mnc_tf.config.model import check_crop_pool_sizes
from mnc_tf.ops._loader import library_available, load_library

IMPLEMENTATIONS = ("auto", "custom", "reference")

_logger = logging.getLogger(__name__)
# Process-wide rather than thread-local: tf.distribute traces replicas in other threads.
_override = "auto"
_warned_fallback = False


def check_roi_sizes(crop_size, pooled_size, spatial_scale, where):
    """The RoI warp's static arguments (the layer and the stock-op reference; the custom op
    checks its attributes itself): the sizes by the model's one crop/pool rule,
    :func:`mnc_tf.config.model.check_crop_pool_sizes` (``where`` prefixes the names in its
    errors), and ``spatial_scale`` finite and ``> 0``.

    Raises:
      ValueError: naming the first bad argument.
    """
    # NumPy integers count as integers (bools do not: the rule rejects them).
    sizes = [
        int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
        for v in (crop_size, pooled_size)
    ]
    check_crop_pool_sizes(*sizes, where=where)
    if not (0 < spatial_scale < float("inf")):
        raise ValueError(f"spatial_scale must be finite and > 0, got {spatial_scale!r}")


_NATIVE_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


def _prepare(features, boxes, box_indices, native=False):
    """Features, float32 boxes, int32 indices, and the dtype to return.

    ``native``: float16 / bfloat16 features go to the op as they are (its CPU kernels take
    them, widen them exactly and sample in float32). Otherwise (the stock-op reference, and
    the op when TensorFlow sees a GPU: the CUDA kernels are float32 only) they are cast to
    float32 here and the result is cast back by the caller.
    """
    features = tf.convert_to_tensor(features)
    dtype = features.dtype
    if dtype in (tf.float16, tf.bfloat16) and not native:
        features = tf.cast(features, tf.float32)
    boxes = tf.convert_to_tensor(boxes, dtype_hint=tf.float32)
    if boxes.dtype != tf.float32:
        boxes = tf.cast(boxes, tf.float32)
    box_indices = tf.convert_to_tensor(box_indices, dtype_hint=tf.int32)
    if box_indices.dtype.is_integer and box_indices.dtype != tf.int32:
        box_indices = tf.cast(box_indices, tf.int32)
    return features, boxes, box_indices, dtype


def roi_warp(
    features, boxes, box_indices, crop_size=28, pooled_size=14, spatial_scale=1 / 16, name=None
):
    """Warps each box to ``crop_size``² bilinear samples, max-pooled to ``pooled_size``².

    Args:
      features: ``[B, H, W, C]`` float32, bfloat16 or float16 feature map. On the CPU the
        op takes 16-bit features natively: widened exactly, sampled, interpolated and pooled
        in float32, the output rounded once to the input dtype (= the float32 op on the
        widened features, cast); their gradient is accumulated in float32 and rounded once.
        Where TensorFlow sees a GPU they are cast to float32 and back (float32 CUDA kernels).
      boxes: ``[R, 4]`` float32 ``y1, x1, y2, x2`` in input-image pixels; feature pixel =
        image pixel * ``spatial_scale``. Flipped boxes (y2 < y1) sample mirrored; samples
        outside the map read 0.
      box_indices: ``[R]`` int32, the image of each box, in ``[0, B)``.
      crop_size: samples per side before pooling (paper: 28).
      pooled_size: output size per side (paper: 14); must divide ``crop_size``, with
        ``crop_size / pooled_size <= 16``.
      spatial_scale: feature stride reciprocal (VGG-16 conv5: 1/16).

    Returns:
      ``[R, pooled_size, pooled_size, C]`` in the dtype of ``features``. Differentiable
      w.r.t. ``features`` and ``boxes``.

    Raises:
      tf.errors.InvalidArgumentError: bad attributes, shapes or values (out-of-range
        indices, non-finite boxes), naming the argument, the expected and the actual value
        (ValueError instead when a tf.function is traced with statically bad shapes).
      OpLibraryNotFoundError: the op library is not built.
    """
    ops = load_library()
    with tf.name_scope(name or "roi_warp"):
        features, boxes, box_indices, dtype = _prepare(
            features, boxes, box_indices, native=not _gpu_visible()
        )
        output, _ = ops.mnc_roi_warp(
            features,
            boxes,
            box_indices,
            crop_size=crop_size,
            pooled_size=pooled_size,
            spatial_scale=spatial_scale,
        )
        return tf.cast(output, dtype) if output.dtype != dtype else output


def _gpu_visible():
    """True when TensorFlow sees a GPU: 16-bit features are then cast to float32 for the
    op (its CUDA kernels are float32 only, and a bfloat16 op would silently be placed on
    the CPU)."""
    return bool(tf.config.list_physical_devices("GPU"))


def roi_warp_reference(
    features, boxes, box_indices, crop_size=28, pooled_size=14, spatial_scale=1 / 16, name=None
):
    """``roi_warp`` from stock TF ops (``crop_and_resize`` + ``max_pool2d``); same contract.

    Feature maps with H == 1 (or W == 1) divide by 1 instead of H - 1: every sample then sits
    on row 0, as in the custom op. Bad static arguments raise ValueError; bad indices raise
    crop_and_resize's InvalidArgumentError; non-finite boxes are not checked.

    Its feature gradient is not deterministic on CPU with 4 or more intra-op threads: TF's
    CropAndResizeGradImage adds boxes of the same image into one buffer from several threads
    without synchronisation (run-to-run differences of O(1) measured in TF 2.21). Train with
    the custom op, whose backward is deterministic; this path is meant for export/inference.
    """
    check_roi_sizes(crop_size, pooled_size, spatial_scale, "roi_warp_reference")
    with tf.name_scope(name or "roi_warp_reference"):
        features, boxes, box_indices, dtype = _prepare(features, boxes, box_indices)
        shape = tf.shape(features)
        extent = tf.cast(tf.maximum(shape[1:3] - 1, 1), tf.float32)
        # Same float operations in the same order as the kernel: (boxes * s) / extent.
        boxes_n = boxes * spatial_scale / tf.tile(extent, [2])
        crops = tf.image.crop_and_resize(
            features, boxes_n, box_indices, [crop_size, crop_size], extrapolation_value=0.0
        )
        window = crop_size // pooled_size
        output = tf.nn.max_pool2d(crops, window, window, "VALID")
        return tf.cast(output, dtype) if dtype != tf.float32 else output


@tf.RegisterGradient("MncRoiWarp")
def _roi_warp_grad(op, grad, _unused_argmax_grad):
    """Gradients w.r.t. features and boxes (none for box_indices), routed by the argmax."""
    grad_features, grad_boxes = load_library().mnc_roi_warp_grad(
        grad,
        op.inputs[0],
        op.inputs[1],
        op.inputs[2],
        op.outputs[1],
        crop_size=op.get_attr("crop_size"),
        pooled_size=op.get_attr("pooled_size"),
        spatial_scale=op.get_attr("spatial_scale"),
    )
    return [grad_features, grad_boxes, None]


def _check_implementation(name):
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"RoI warp implementation must be one of {IMPLEMENTATIONS}, got {name!r}")


@contextlib.contextmanager
def roi_warp_implementation(name):
    """Overrides, inside the block, the implementation every ``RoIWarp`` layer uses.

    ``"custom"``: the op; ``"reference"``: stock ops (e.g. while tracing a model for
    export, so the SavedModel needs no op library); ``"auto"``: no override, each layer's
    own setting applies. The override is process-wide, read when a layer is called (or
    traced).
    """
    global _override
    _check_implementation(name)
    previous, _override = _override, name
    try:
        yield
    finally:
        _override = previous


def get_roi_warp_implementation():
    """The current override: ``"auto"`` (none), ``"custom"`` or ``"reference"``."""
    return _override


def resolve_roi_warp_implementation(requested="auto"):
    """``"custom"`` or ``"reference"`` for a caller asking for ``requested``.

    A non-``"auto"`` override from ``roi_warp_implementation`` wins. ``"auto"`` means the
    op when its library loads, else the reference (with one logged warning per process).
    """
    global _warned_fallback
    _check_implementation(requested)
    name = _override if _override != "auto" else requested
    if name != "auto":
        return name
    if library_available():
        return "custom"
    if not _warned_fallback:
        _warned_fallback = True
        _logger.warning(
            "mnc_tf op library not built: RoI warping uses the slower stock-op reference "
            "(crop_and_resize + max_pool2d). Build it with `python custom_ops/build.py`."
        )
    return "reference"
