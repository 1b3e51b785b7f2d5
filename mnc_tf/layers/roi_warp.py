"""Keras layer around RoI warping (``mnc_tf.ops.roi_warp`` / ``roi_warp_reference``)."""

from __future__ import annotations

import keras

from mnc_tf.ops.roi_warp import (
    IMPLEMENTATIONS,
    check_roi_sizes,
    resolve_roi_warp_implementation,
    roi_warp,
    roi_warp_reference,
)


@keras.saving.register_keras_serializable(package="mnc_tf")
class RoIWarp(keras.layers.Layer):
    """Warps the features inside each box to ``pooled_size``² cells (MNC stages 2-3).

    Call as ``layer(features, boxes, box_indices)``:

    - features: ``[B, H, W, C]`` feature map (cast to the layer's compute dtype; bfloat16 /
      float16 stay 16-bit through the op's CPU kernels, sampled in float32).
    - boxes: ``[R, 4]`` ``y1, x1, y2, x2`` in input-image pixels, kept in float32 even under
      mixed precision (float16 cannot hold pixel coordinates of large images exactly).
    - box_indices: ``[R]`` int32 image of each box.

    Returns ``[R, pooled_size, pooled_size, C]`` in the compute dtype; differentiable
    w.r.t. features and boxes.

    Args:
      crop_size: bilinear samples per side before max-pooling (paper: 28).
      pooled_size: output cells per side (paper: 14); divides ``crop_size``.
      spatial_scale: feature pixels per image pixel (stride 16: 1/16).
      implementation: ``"auto"`` (custom op if built, else stock ops), ``"custom"`` or
        ``"reference"``. A ``mnc_tf.ops.roi_warp_implementation(...)`` block active when
        the layer is called overrides it (the exporter traces with ``"reference"``).
    """

    def __init__(
        self, crop_size=28, pooled_size=14, spatial_scale=1 / 16, implementation="auto", **kwargs
    ):
        super().__init__(**kwargs)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
            )
        check_roi_sizes(crop_size, pooled_size, spatial_scale, "RoIWarp")
        self.crop_size = int(crop_size)
        self.pooled_size = int(pooled_size)
        self.spatial_scale = float(spatial_scale)
        self.implementation = implementation
        # The custom op has no XLA kernel.
        self.supports_jit = False
        # Keras would cast every floating input to the compute dtype (float16 boxes lose
        # whole pixels); call() casts features only, so arrays must be let through as-is.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def call(self, features, boxes, box_indices):
        features = keras.ops.cast(features, self.compute_dtype)
        boxes = keras.ops.cast(boxes, "float32")
        box_indices = keras.ops.cast(box_indices, "int32")
        name = resolve_roi_warp_implementation(self.implementation)
        fn = roi_warp if name == "custom" else roi_warp_reference
        return fn(
            features,
            boxes,
            box_indices,
            crop_size=self.crop_size,
            pooled_size=self.pooled_size,
            spatial_scale=self.spatial_scale,
        )

    def compute_output_shape(
        self, features_shape=None, boxes_shape=None, box_indices_shape=None, **kwargs
    ):
        # Keras builds a layer without its own build() from the first argument only and later
        # (model.summary(), after load_model) calls this with ``input_shape=features_shape``.
        # That name must stay out of the signature: Keras maps the named ``*_shape``
        # arguments to call() arguments and rejects ``input_shape`` (functional models).
        if features_shape is None:
            features_shape = kwargs.get("input_shape")
        channels = None if features_shape is None else features_shape[-1]
        num_boxes = None if boxes_shape is None else boxes_shape[0]
        return (num_boxes, self.pooled_size, self.pooled_size, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            crop_size=self.crop_size,
            pooled_size=self.pooled_size,
            spatial_scale=self.spatial_scale,
            implementation=self.implementation,
        )
        return config
