"""MNCConfig: paper defaults, (de)serialisation, key and value validation."""

import pytest

from mnc_tf.config import MNCConfig


def test_paper_defaults():
    c = MNCConfig()
    assert (c.input.short_side, c.input.max_side) == (600, 1000)
    assert c.rpn.anchor_base_size == 16 and c.rpn.anchor_ratios == (0.5, 1.0, 2.0)
    assert c.rpn.anchor_scales == (8.0, 16.0, 32.0)
    assert (c.rpn.pre_nms_topk_train, c.rpn.post_nms_topk_train) == (12000, 300)
    assert (c.rpn.pre_nms_topk_test, c.rpn.post_nms_topk_test) == (6000, 300)
    assert (c.rpn.nms_iou, c.rpn.min_size, c.rpn.batch_size_per_image) == (0.7, 16.0, 256)
    assert (c.rpn.positive_iou, c.rpn.negative_iou, c.rpn.positive_fraction) == (0.7, 0.3, 0.5)
    assert (
        c.roi_sampling.batch_size_per_image,
        c.roi_sampling.fg_fraction,
        c.roi_sampling.fg_iou,
    ) == (64, 0.3, 0.5)
    assert (c.roi_sampling.bg_iou_low, c.roi_sampling.bg_iou_high) == (0.1, 0.5)
    assert (
        c.heads.roi_crop_size,
        c.heads.roi_pooled_size,
        c.heads.mask_size,
        c.heads.mask_fc_dim,
    ) == (28, 14, 28, 256)
    assert (c.heads.fc_dim, c.heads.class_pool_size, c.heads.cls_mask_iou_threshold) == (
        4096,
        7,
        0.5,
    )
    assert (c.postprocess.nms_iou, c.postprocess.max_detections, c.input.max_instances) == (
        0.3,
        100,
        100,
    )
    assert (c.postprocess.mask_voting_iou, c.postprocess.mask_threshold) == (0.5, 0.4)
    assert c.cascade.box_gradient is True
    assert (
        c.optimizer.name,
        c.optimizer.learning_rate,
        c.optimizer.momentum,
        c.optimizer.weight_decay,
    ) == ("sgd", 1e-3, 0.9, 5e-4)
    assert (c.optimizer.lr_drop_fraction, c.optimizer.lr_drop_factor) == (0.2, 0.1)


def test_released_training_defaults():
    """The released prototxt / mnc_config.py settings (docs/faithfulness.md)."""
    c = MNCConfig()
    assert c.roi_sampling.bg_split == (0.85, 0.15)
    assert c.loss_weights.mask == 2.0 and c.loss_weights.det_cls == 1.0 and c.heads.det_classifier
    assert c.cascade.proposal_gradient_clip == c.cascade.bridge_gradient_clip == 1.0 / 512
    assert c.rpn.min_size_scaled and c.rpn.min_size_before_topk and c.rpn.mix_index
    assert c.heads.mask_pathway_grad_fg_only and c.heads.cls_mask_binarize_threshold == 0.4
    assert (
        c.optimizer.bias_lr_mult == 2.0
        and c.optimizer.bias_weight_decay
        and c.postprocess.mask_voting_rebox
    )


def test_dict_and_yaml_round_trip():
    c = MNCConfig(mask_size=21, anchor_scales=(4, 8), backbone_weights="w.h5")
    assert MNCConfig.from_dict(c.to_dict()) == c
    assert MNCConfig.from_yaml(c.to_yaml()) == c
    assert c.to_dict()["rpn"]["anchor_scales"] == [4, 8]  # plain YAML/JSON types
    assert MNCConfig.tiny_shapes() == MNCConfig.from_yaml(MNCConfig.tiny_shapes().to_yaml())


def test_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mask_size: 21\nfc_dim: 512\n")
    c = MNCConfig.from_yaml(str(path))
    assert (c.heads.mask_size, c.heads.fc_dim, c.input.short_side) == (21, 512, 600)


def test_unknown_key_names_key_and_suggestion():
    with pytest.raises(ValueError, match=r"'mask_szie'.*'mask_size'"):
        MNCConfig.from_dict({"mask_szie": 21})
    with pytest.raises(ValueError, match=r"'rpn_nms_iuo'.*'rpn_nms_iou'"):
        MNCConfig().replace(rpn_nms_iuo=0.5)
    with pytest.raises(ValueError, match="lerning_rate"):
        MNCConfig.tiny_shapes(lerning_rate=1.0)


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="roi_pooled_size"):
        MNCConfig(roi_crop_size=28, roi_pooled_size=5)
    with pytest.raises(ValueError, match="optimizer"):
        MNCConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="max_side"):
        MNCConfig(short_side=600, max_side=500)


def test_tiny_preset_is_small():
    c = MNCConfig.tiny_shapes(fc_dim=128)
    assert (
        c.backbone_options.feature_stride == 8 and c.heads.fc_dim == 128 and c.heads.mask_size == 28
    )
    assert c.rpn.anchor_base_size * min(c.rpn.anchor_scales) == 16  # smallest anchor 16 px
