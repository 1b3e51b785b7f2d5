"""The cascade as data: stage list with its heads, one loop, labels, loss terms and weights."""

import numpy as np
import pytest
import tensorflow as tf
from modeling_testutil import make_shapes, make_tiny_config
from test_sampling import np_iou

from mnc_tf.modeling import MNC, losses
from mnc_tf.modeling.cascade import CLASS, MASK, cascade_stages, loss_terms
from mnc_tf.modeling.matching import label_rois


def test_stage_list_holds_shared_heads():
    mask_head, class_head = object(), object()
    stages = cascade_stages(5, mask_head, class_head)
    assert [(s.number, s.kind, s.loss_suffix) for s in stages] == [
        (2, MASK, ""),
        (3, CLASS, ""),
        (4, MASK, "_4"),
        (5, CLASS, "_5"),
    ]
    assert stages[0].head is stages[2].head is mask_head
    assert stages[1].head is stages[3].head is class_head
    for bad in (2, 4, 1, 3.0):
        with pytest.raises(ValueError, match="num_stages must be an odd int"):
            cascade_stages(bad)


def test_loss_terms_map_every_stage_name_to_its_term():
    stages = cascade_stages(5)
    assert loss_terms(stages, det_classifier=True) == [
        ("mask_loss", "mask"),
        ("cls_loss", "cls"),
        ("det_cls_loss", "det_cls"),
        ("box_loss", "box"),
        ("mask_loss_4", "mask"),
        ("cls_loss_5", "cls"),
        ("det_cls_loss_5", "det_cls"),
        ("box_loss_5", "box"),
    ]
    assert [t for _, t in loss_terms(cascade_stages(3))] == ["mask", "cls", "box"]


def test_loss_weights_read_each_config_field():
    cfg = make_tiny_config(
        rpn_cls_loss_weight=0.5,
        rpn_box_loss_weight=0.25,
        mask_loss_weight=3.0,
        cls_loss_weight=1.5,
        det_cls_loss_weight=0.75,
        box_loss_weight=2.5,
    )
    assert losses.loss_weights(cfg.loss_weights) == {
        "rpn_cls": 0.5,
        "rpn_box": 0.25,
        "mask": 3.0,
        "cls": 1.5,
        "det_cls": 0.75,
        "box": 2.5,
    }
    assert set(losses.loss_weights(cfg.loss_weights)) == set(losses.TERMS)
    values = {"a": tf.constant(2.0), "b": tf.constant(3.0)}
    total = losses.weighted_sum(
        values, [("a", "mask"), ("b", "box")], losses.loss_weights(cfg.loss_weights)
    )
    assert float(total) == 3.0 * 2.0 + 2.5 * 3.0


def test_label_rois_against_numpy():
    rng = np.random.default_rng(3)
    gt = np.array([[[0, 0, 20, 20], [30, 30, 60, 50], [0, 0, 1, 1]]], np.float32)
    gt_labels = np.array([[2, 1, -1]], np.int32)
    gt_valid = gt_labels > 0
    y1x1 = rng.uniform(0, 40, (1, 40, 2))
    rois = np.concatenate([y1x1, y1x1 + rng.uniform(5, 30, (1, 40, 2))], -1).astype(np.float32)
    rois[0, :2] = gt[0, :2]  # exact matches are foreground
    valid = rng.uniform(size=(1, 40)) < 0.8
    valid[0, :2] = True
    out = label_rois(rois, valid, gt, gt_labels, gt_valid, 0.5)
    iou = np_iou(rois[0].astype(np.float64), gt[0].astype(np.float64))
    iou[:, ~gt_valid[0]] = -1
    fg = valid[0] & (iou.max(1) >= 0.5)
    np.testing.assert_array_equal(out["fg"][0], fg)
    np.testing.assert_array_equal(out["matched"][0], iou.argmax(1))
    np.testing.assert_array_equal(out["labels"][0], np.where(fg, gt_labels[0][iou.argmax(1)], 0))
    np.testing.assert_allclose(out["max_iou"][0], iou.max(1), rtol=1e-5, atol=1e-6)
    assert fg[:2].all() and 0 < fg.sum() < valid.sum()


@pytest.fixture(scope="module")
def model():
    return MNC(2, backbone="tiny", num_stages=5, config=make_tiny_config())


def test_run_collects_one_output_per_stage(model):
    images, targets = make_shapes(2, seed=2)
    features, logits, deltas, anchors = model._features(tf.constant(images), False)
    size = tf.constant([[64.0, 64.0]] * 2)
    props, _, valid = model._proposals(logits, deltas, anchors, size, images)
    outputs = model.cascade.run(features, size, props, valid)
    assert [o.stage.number for o in outputs] == [2, 3, 4, 5]
    # A class stage classifies the RoIs and masks of the mask stage before it.
    for mask_out, class_out in (outputs[0:2], outputs[2:4]):
        assert class_out.rois is mask_out.rois and class_out.mask_logits is mask_out.mask_logits
        assert class_out.cls_logits.shape == (2, 32, 3) and mask_out.cls_logits is None
        assert class_out.box_labels is None and class_out.det_logits is None
    # Stage 4 runs on stage 3's regressed boxes: other boxes, the same valid rows.
    assert not np.allclose(outputs[2].rois, outputs[0].rois)
    np.testing.assert_array_equal(outputs[2].valid, outputs[0].valid)
    boxes, masks, probs, valid_all = model.cascade.instances(outputs)
    np.testing.assert_array_equal(boxes, tf.concat([outputs[1].rois, outputs[3].rois], 1))
    np.testing.assert_array_equal(probs[:, 32:], tf.nn.softmax(outputs[3].cls_logits))
    np.testing.assert_array_equal(masks[:, :32], tf.sigmoid(outputs[0].mask_logits))
    assert valid_all.shape == (2, 64)


def test_training_run_relabels_stage_four_with_label_rois(model):
    images, targets = make_shapes(2, seed=2)
    cfg = model.config
    features, logits, deltas, anchors = model._features(tf.constant(images), False)
    size = tf.constant([[64.0, 64.0]] * 2)
    props, _, valid = model._proposals(logits, deltas, anchors, size, images)
    gt = {
        "boxes": tf.constant(targets["boxes"]),
        "labels": tf.constant(targets["labels"]),
        "valid": tf.constant(targets["labels"] > 0),
        "masks": tf.constant(targets["masks"]),
    }
    stage2 = label_rois(
        props, valid, gt["boxes"], gt["labels"], gt["valid"], cfg.roi_sampling.fg_iou
    )
    run = {"gt": gt, "box_labels": stage2, "grad_scale": tf.constant(0.5)}
    outputs = model.cascade.run(features, size, props, valid, False, run)
    assert outputs[0].box_labels is stage2
    four = outputs[2]
    # bridge_add_gt: stage 4 has the GT boxes appended (2 columns: the most objects per image).
    assert four.rois.shape == (2, 34, 4) and cfg.cascade.bridge_add_gt
    expected = label_rois(four.rois, four.valid, gt["boxes"], gt["labels"], gt["valid"], 0.5)
    for key in ("fg", "matched", "labels"):
        np.testing.assert_array_equal(four.box_labels[key], expected[key])
    assert outputs[3].det_logits.shape == (2, 34, 3) and outputs[3].cls_labels.shape == (2, 34)
    per_image = model.cascade.losses(outputs, gt)
    assert list(per_image) == [name for name, _ in loss_terms(model.stages, True)]
