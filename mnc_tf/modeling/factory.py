"""Builds every part of an MNC model from its arguments and an :class:`MNCConfig`."""

import dataclasses

import keras

from mnc_tf.modeling.anchors import AnchorGenerator
from mnc_tf.modeling.backbones import build_backbone
from mnc_tf.modeling.cascade import cascade_stages, check_num_stages
from mnc_tf.modeling.stage1_rpn.head import RPNHead
from mnc_tf.modeling.stage2_mask.mask_head import MaskHead
from mnc_tf.modeling.stage2_mask.roi_features import build_roi_warp
from mnc_tf.modeling.stage3_class.class_head import ClassHead
from mnc_tf.preprocessing import Preprocessing


@dataclasses.dataclass
class MNCParts:
    """The components of Figure 2, before they are wired together by :class:`MNC`."""

    preprocessing: Preprocessing
    backbone: keras.Model
    feature_stride: int
    anchor_generator: AnchorGenerator
    rpn_head: RPNHead
    roi_warp: keras.layers.Layer
    mask_head: MaskHead
    class_head: ClassHead
    stages: list  # cascade.StageDef per stage after the RPN, holding mask_head / class_head
    # ImageNet fc1/fc2 for the class head's fc6/fc7 (VGG-16 with ImageNet weights), or None.
    head_init: dict | None = None


def build_mnc_parts(num_classes, backbone, num_stages, config):
    """Build the parts of ``MNC(num_classes, backbone, num_stages, config)``.

    Raises:
      ValueError: bad ``num_classes`` / ``num_stages`` / ``backbone``.
      FileNotFoundError: ``config.backbone_options.weights`` does not exist.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    check_num_stages(num_stages)
    model, stride, norm, head_init = build_backbone(backbone, config)
    anchors = AnchorGenerator(
        config.rpn.anchor_base_size, config.rpn.anchor_ratios, config.rpn.anchor_scales, stride
    )
    preprocessing = Preprocessing(
        config.input.short_side,
        config.input.max_side,
        norm,
        name="preprocessing",
        dtype="float32",
    )
    rpn_head = RPNHead(anchors.num_anchors, config.rpn.conv_filters, name="rpn_head")
    roi_warp = build_roi_warp(
        config.heads.roi_crop_size, config.heads.roi_pooled_size, 1.0 / stride
    )
    mask_head = MaskHead(config.heads.mask_size, config.heads.mask_fc_dim, name="mask_head")
    class_head = ClassHead(
        num_classes,
        config.heads.fc_dim,
        config.heads.roi_pooled_size,
        config.heads.class_pool_size,
        det_classifier=config.heads.det_classifier,
        name="class_head",
    )
    return MNCParts(
        preprocessing=preprocessing,
        backbone=model,
        feature_stride=stride,
        anchor_generator=anchors,
        rpn_head=rpn_head,
        roi_warp=roi_warp,
        mask_head=mask_head,
        class_head=class_head,
        stages=cascade_stages(num_stages, mask_head, class_head),
        head_init=head_init,
    )
