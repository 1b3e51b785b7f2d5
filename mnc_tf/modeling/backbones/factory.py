"""Backbone by name or user model, with the pixel normalisation it expects.

User backbone contract: a ``keras.Model`` mapping normalised images ``[B, H, W, 3]`` to one
feature map ``[B, ceil(H/s), ceil(W/s), C]`` with a static channel count ``C``. Its stride ``s``
comes from ``config.backbone_options.feature_stride`` or, if that is None, from the model's
``feature_stride`` attribute. Its input is normalised per ``config.input.normalization``
(default ``"none"``: raw 0..255 RGB).
"""

import os

import keras

from mnc_tf.modeling.backbones.resnet import build_resnet
from mnc_tf.modeling.backbones.tiny import build_tiny
from mnc_tf.modeling.backbones.vgg16 import build_vgg16

BACKBONES = ("vgg16", "resnet50", "resnet101", "tiny")
_DEFAULT_NORMALIZATION = {
    "vgg16": "caffe",
    "resnet50": "caffe",
    "resnet101": "caffe",
    "tiny": "scale",
}


def build_backbone(backbone, config):
    """Resolve ``backbone`` into ``(model, feature_stride, normalization_mode, head_init)``.

    Args:
      backbone: ``"vgg16"``, ``"resnet50"``, ``"resnet101"``, ``"tiny"`` or a ``keras.Model``.
      config: :class:`mnc_tf.MNCConfig` (``backbone_weights``: None, ``"imagenet"`` for the
        keras.applications backbones, or a local file; ``feature_stride``,
        ``input_normalization``, ``tiny_*``, ``freeze_early_layers``).

    ``head_init`` is None or, for VGG-16 with ImageNet weights that include the classifier,
    ``{"fc1": (kernel, bias), "fc2": (kernel, bias)}`` for the class stage's fc6/fc7.
    """
    weights = config.backbone_options.weights
    if isinstance(backbone, keras.Model):
        stride = config.backbone_options.feature_stride or getattr(backbone, "feature_stride", None)
        if not stride:
            raise ValueError(
                "backbone: a user keras.Model needs its stride, via "
                "MNCConfig.backbone_options.feature_stride or a `feature_stride` attribute on "
                "the model"
            )
        channels = backbone.output_shape[-1] if hasattr(backbone, "output_shape") else None
        if not isinstance(channels, int):
            raise ValueError(
                f"backbone: a user keras.Model must output [B, h, w, C] with a static C, "
                f"got output shape {getattr(backbone, 'output_shape', None)}"
            )
        return backbone, int(stride), config.input.normalization or "none", None
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES} or a keras.Model, got {backbone!r}")
    if weights == "imagenet":
        if backbone == "tiny":
            raise ValueError(
                "backbone_weights='imagenet' needs a keras.applications backbone "
                f"('vgg16', 'resnet50', 'resnet101'), got backbone {backbone!r}"
            )
    elif weights is not None and not os.path.exists(weights):
        raise FileNotFoundError(f"backbone_weights file not found: {weights!r}")
    norm = config.input.normalization or _DEFAULT_NORMALIZATION[backbone]
    if backbone == "tiny":
        stride = config.backbone_options.feature_stride or 16
        model = build_tiny(
            stride,
            config.backbone_options.tiny_filters,
            config.backbone_options.tiny_convs_per_stage,
            config.backbone_options.tiny_out_channels,
        )
        if weights is not None:
            model.load_weights(weights)
        return model, stride, norm, None
    if config.backbone_options.feature_stride not in (None, 16):
        raise ValueError(
            f"feature_stride for backbone {backbone!r} must be 16 (or None), "
            f"got {config.backbone_options.feature_stride!r}"
        )
    head_init = None
    if backbone == "vgg16":
        model, head_init = build_vgg16(weights, config.backbone_options.freeze_early_layers)
    else:
        model = build_resnet(backbone, weights, config.backbone_options.freeze_early_layers)
    return model, 16, norm, head_init
