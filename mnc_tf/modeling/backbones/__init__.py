"""Shared-feature backbones (Figure 2's "conv" trunk)."""

from mnc_tf.modeling.backbones.factory import BACKBONES, build_backbone

__all__ = ["BACKBONES", "build_backbone"]
