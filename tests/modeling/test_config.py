"""MNCConfig: paper defaults, (de)serialisation, key and value validation."""

import pytest

from mnc_tf.config import MNCConfig


def test_paper_defaults():
    c = MNCConfig()
    assert (c.short_side, c.max_side) == (600, 1000)
    assert c.anchor_base_size == 16 and c.anchor_ratios == (0.5, 1.0, 2.0)
    assert c.anchor_scales == (8.0, 16.0, 32.0)
    assert (c.rpn_pre_nms_topk_train, c.rpn_post_nms_topk_train) == (12000, 300)
    assert (c.rpn_pre_nms_topk_test, c.rpn_post_nms_topk_test) == (6000, 300)
    assert (c.rpn_nms_iou, c.rpn_min_size, c.rpn_batch_size_per_image) == (0.7, 16.0, 256)
    assert (c.rpn_positive_iou, c.rpn_negative_iou, c.rpn_positive_fraction) == (0.7, 0.3, 0.5)
    assert (c.roi_batch_size_per_image, c.roi_fg_fraction, c.roi_fg_iou) == (64, 0.3, 0.5)
    assert (c.roi_bg_iou_low, c.roi_bg_iou_high) == (0.1, 0.5)
    assert (c.roi_crop_size, c.roi_pooled_size, c.mask_size, c.mask_fc_dim) == (28, 14, 28, 256)
    assert (c.fc_dim, c.class_pool_size, c.cls_mask_iou_threshold) == (4096, 7, 0.5)
    assert (c.detection_nms_iou, c.max_detections, c.max_instances) == (0.3, 100, 100)
    assert (c.mask_voting_iou, c.mask_binarize_threshold) == (0.5, 0.4)
    assert c.box_gradient is True
    assert (c.optimizer, c.learning_rate, c.momentum, c.weight_decay) == ("sgd", 1e-3, 0.9, 5e-4)
    assert (c.lr_drop_fraction, c.lr_drop_factor) == (0.2, 0.1)


def test_released_training_defaults():
    """The released prototxt / mnc_config.py settings (docs/faithfulness.md)."""
    c = MNCConfig()
    assert c.roi_bg_split == (0.85, 0.15)
    assert c.mask_loss_weight == 2.0 and c.det_cls_loss_weight == 1.0 and c.det_classifier
    assert c.proposal_gradient_clip == c.bridge_gradient_clip == 1.0 / 512
    assert c.rpn_min_size_scaled and c.rpn_min_size_before_topk and c.rpn_mix_index
    assert c.mask_pathway_grad_fg_only and c.cls_mask_binarize_threshold == 0.4
    assert c.bias_lr_mult == 2.0 and c.bias_weight_decay and c.mask_voting_rebox


def test_dict_and_yaml_round_trip():
    c = MNCConfig(mask_size=21, anchor_scales=(4, 8), backbone_weights="w.h5")
    assert MNCConfig.from_dict(c.to_dict()) == c
    assert MNCConfig.from_yaml(c.to_yaml()) == c
    assert c.to_dict()["anchor_scales"] == [4, 8]  # plain YAML/JSON types
    assert MNCConfig.tiny_shapes() == MNCConfig.from_yaml(MNCConfig.tiny_shapes().to_yaml())


def test_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mask_size: 21\nfc_dim: 512\n")
    c = MNCConfig.from_yaml(str(path))
    assert (c.mask_size, c.fc_dim, c.short_side) == (21, 512, 600)


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
    assert c.feature_stride == 8 and c.fc_dim == 128 and c.mask_size == 28
    assert c.anchor_base_size * min(c.anchor_scales) == 16  # smallest anchor 16 px
