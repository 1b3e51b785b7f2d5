"""Inference precision: an MNC model computing in float32, bfloat16 or float16.

Training in reduced precision uses a Keras *mixed* policy (``MNC(dtype_policy=
"mixed_bfloat16")``, ``mnc-train --mixed-precision mixed_bfloat16``): float32 weights, which
every layer casts to bfloat16 at each call. For inference nothing needs float32 weights, so
:func:`with_precision` builds a copy of the model whose weights are *stored* in the target
dtype (Keras policy ``"bfloat16"`` / ``"float16"``): no per-call weight casts, half the
memory, and the same products as the mixed policy (which rounds the weights to the same
16-bit values before every matmul). What stays float32 whatever the precision, and why, is in
docs/precision.md: image normalisation, every box coordinate, RoI-warp sampling positions and
weights, the heads' outputs (logits, box deltas), proposals, NMS, mask voting and pasting.
"""

PRECISIONS = ("float32", "bfloat16", "float16")


def check_precision(precision, argument="precision"):
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming ``argument``."""
    if precision not in PRECISIONS:
        raise ValueError(f"{argument}: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def model_precision(model):
    """The compute dtype of ``model`` (``"float32"``, ``"bfloat16"`` or ``"float16"``)."""
    return model.dtype_policy.compute_dtype


def with_precision(model, precision):
    """An inference copy of the MNC ``model`` that computes in ``precision``.

    Args:
      model: an :class:`mnc_tf.MNC` (any policy; e.g. trained in float32 or mixed_bfloat16).
      precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Returns:
      ``model`` itself when it already computes in ``precision`` with weights of that dtype;
      otherwise a new MNC with the same configuration, class names and weights (rounded to
      ``precision``), built with the Keras dtype policy ``precision``. Its outputs (boxes,
      scores, classes, masks) are float32 / int32 as in float32. For 16-bit precisions its
      head fc layers compute from transposed kernel copies
      (:meth:`mnc_tf.layers.HeadDense.use_transposed_kernel`): an inference model — to
      change its weights, convert again.
    """
    from mnc_tf.modeling.mnc import MNC

    check_precision(precision)
    if not isinstance(model, MNC):
        raise ValueError(f"model: expected an mnc_tf.MNC, got {type(model).__name__}")
    policy = model.dtype_policy
    if policy.compute_dtype == precision and policy.variable_dtype == precision:
        return model
    config = model.get_config()
    config["dtype"] = precision
    copy = MNC.from_config(config)
    weights = model.get_weights()
    for variable, value in zip(copy.weights, weights, strict=True):
        variable.assign(value.astype(variable.dtype) if hasattr(value, "astype") else value)
    if precision != "float32":
        from mnc_tf.layers.dense import HeadDense

        for layer in copy._flatten_layers(include_self=False):
            if isinstance(layer, HeadDense):
                layer.use_transposed_kernel()
    return copy
