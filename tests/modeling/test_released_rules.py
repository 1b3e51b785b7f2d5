"""Released-code training rules that are not in test_released_parity.py: MIX_INDEX, the RPN
min-size filter, the mask-pathway gradient, the box-level classifier, bias lr_mult / decay,
and the VGG-16 ImageNet initialisation (downloader replaced: no network)."""

import logging

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from modeling_testutil import make_shapes, make_tiny_config

from mnc_tf.config import MNCConfig
from mnc_tf.modeling import MNC
from mnc_tf.modeling.backbones import factory as backbone_factory
from mnc_tf.modeling.backbones import vgg16 as vgg
from mnc_tf.modeling.backbones.tiny import build_tiny
from mnc_tf.modeling.cascade import Cascade, cascade_stages
from mnc_tf.modeling.optim import CaffeSGD, build_optimizer
from mnc_tf.modeling.stage1_rpn.anchor_labeler import mix_index_labels
from mnc_tf.modeling.stage1_rpn.proposals import generate_proposals
from mnc_tf.modeling.stage3_class.class_head import ClassHead

# ---------------------------------------------------------------- MIX_INDEX


def test_mix_index_relabels_anchors_behind_sampled_rois():
    """Released anchor_target_layer: labels[bg anchors] = 0, then labels[fg anchors] = 1,
    only for anchors inside the image (inds_inside)."""
    labels = np.array([[-1, -1, 0, 1, -1, -1], [1, -1, -1, -1, 0, -1]], np.int32)
    inside = np.array([[True] * 5 + [False], [True] * 6])
    roi_anchors = np.array([[0, 2, 3, 5, -1], [4, 1, 1, -1, 2]], np.int32)
    roi_fg = np.array([[True, False, False, True, True], [True, False, True, False, False]])
    roi_bg = np.array([[False, True, True, False, False], [False, True, False, True, True]])
    out = mix_index_labels(labels, inside, roi_anchors, roi_fg, roi_bg).numpy()
    # Image 0: anchor 0 ← fg, 2 ← bg, 3 ← bg (was 1), 5 outside (kept -1), -1 ignored.
    # Image 1: anchor 4 ← fg, 1 ← bg then fg (fg wins), 2 ← bg.
    np.testing.assert_array_equal(out, [[1, -1, 0, 0, -1, -1], [1, 1, 0, -1, 1, -1]])


def test_mix_index_changes_the_rpn_loss_and_can_be_switched_off():
    images, targets = make_shapes(2, seed=3)
    keras.utils.set_random_seed(0)
    on = MNC(2, backbone="tiny", num_stages=3, config=make_tiny_config())
    off = MNC(2, backbone="tiny", num_stages=3, config=make_tiny_config(rpn_mix_index=False))
    off.set_weights(on.get_weights())
    a, b = on.compute_losses(images, targets), off.compute_losses(images, targets)
    assert float(a["mask_loss"]) == pytest.approx(float(b["mask_loss"]), rel=1e-6)
    assert float(a["rpn_cls_loss"]) != pytest.approx(float(b["rpn_cls_loss"]), rel=1e-4)


# ---------------------------------------------------------------- RPN min size


def test_min_size_before_topk_and_scaled_by_image_scale():
    # Anchors: the two best-scored are 8 px, the next two 20 px.
    anchors = np.array(
        [[0, 0, 8, 8], [20, 20, 28, 28], [0, 30, 20, 50], [30, 0, 50, 20]], np.float32
    )
    logits = np.array([[4.0, 3.0, 2.0, 1.0]], np.float32)
    deltas = np.zeros((1, 4, 4), np.float32)
    size = np.array([[64.0, 64.0]], np.float32)
    args = (logits, deltas, anchors, size, 2, 4, 0.7, 10.0)
    _, _, valid_after = generate_proposals(*args)  # top-2 are the small ones: none left
    assert int(np.sum(valid_after)) == 0
    boxes, _, valid, idx = generate_proposals(
        *args, min_size_before_topk=True, return_anchor_indices=True
    )
    np.testing.assert_array_equal(idx[0, :2], [2, 3])  # filtered first, then the top-2
    assert int(np.sum(valid)) == 2 and np.all(idx[0, 2:] == -1)
    # 10 px at the original scale is 25 px after a 2.5x resize: now nothing passes.
    _, _, valid_scaled = generate_proposals(
        *args, min_size_before_topk=True, image_scale=np.array([2.5], np.float32)
    )
    assert int(np.sum(valid_scaled)) == 0


def test_model_reads_the_min_size_scale_from_image_info():
    model = MNC(2, backbone="tiny", num_stages=3, config=make_tiny_config())
    info = np.array([[[32, 32], [64, 64], [2.0, 2.0], [0, 0]]], np.float32)
    np.testing.assert_allclose(model._min_size_scale({"images": None, "image_info": info}), [2.0])
    assert model._min_size_scale(np.zeros((1, 64, 64, 3))) is None
    off = MNC(2, backbone="tiny", num_stages=3, config=make_tiny_config(rpn_min_size_scaled=False))
    assert off._min_size_scale({"images": None, "image_info": info}) is None


# ---------------------------------------------------------------- stage 3


def _cascade(num_classes=2, **overrides):
    cfg = MNCConfig(mask_size=6, roi_pooled_size=4, class_pool_size=2, fc_dim=8, **overrides)
    head = ClassHead(
        num_classes, cfg.heads.fc_dim, cfg.heads.roi_pooled_size, cfg.heads.class_pool_size, True
    )
    head.build((None, 4, 4, 3), (None, 6, 6))
    return Cascade(cascade_stages(3, None, head), None, cfg, num_classes)


def test_mask_pathway_gradient_only_from_selected_rois():
    """Released MaskLayer.backward copies the top gradient for mask-foreground RoIs only."""
    cascade = _cascade()
    rng = np.random.default_rng(0)
    warped = tf.constant(rng.uniform(size=(4, 4, 4, 3)), tf.float32)  # B=2 × R=2
    mask_logits = tf.Variable(rng.normal(size=(2, 2, 6, 6)).astype(np.float32))
    rows = np.array([[True, False], [False, True]])
    with tf.GradientTape(persistent=True) as tape:
        logits, _ = cascade._classify(warped, mask_logits, 2, True, grad_rows=rows)
        all_rows, _ = cascade._classify(warped, mask_logits, 2, True)
        loss, loss_all = tf.reduce_sum(logits**2), tf.reduce_sum(all_rows**2)
    np.testing.assert_allclose(logits, all_rows)  # forward unchanged
    g = np.abs(tape.gradient(loss, mask_logits).numpy()).sum(axis=(2, 3))
    assert np.all(g[rows] > 0) and np.all(g[~rows] == 0)
    assert np.all(np.abs(tape.gradient(loss_all, mask_logits).numpy()).sum(axis=(2, 3)) > 0)


def test_det_classifier_is_trained_on_box_labels():
    """det_cls_loss uses the box-level labels, cls_loss the mask-level ones: a model whose
    masks never match (IoU threshold 1.01) has all-background mask labels."""
    images, targets = make_shapes(2, seed=1)
    keras.utils.set_random_seed(0)
    strict = MNC(
        2, backbone="tiny", num_stages=3, config=make_tiny_config(cls_mask_iou_threshold=1.01)
    )
    loose = MNC(
        2, backbone="tiny", num_stages=3, config=make_tiny_config(cls_mask_iou_threshold=0.0)
    )
    loose.set_weights(strict.get_weights())
    a, b = strict.compute_losses(images, targets), loose.compute_losses(images, targets)
    assert float(a["det_cls_loss"]) == pytest.approx(float(b["det_cls_loss"]), rel=1e-6)
    assert float(b["det_cls_loss"]) == pytest.approx(float(b["cls_loss"]), rel=0.3)
    assert float(a["cls_loss"]) != pytest.approx(float(b["cls_loss"]), rel=1e-3)
    assert strict.class_head.det_cls is not None
    assert "det_cls_score" in {w.path.split("/")[-2] for w in strict.class_head.weights}


# ---------------------------------------------------------------- optimiser


def test_caffe_sgd_bias_lr_mult_and_decay():
    """v <- mu v - lr·mult (g + lam w) for biases (Caffe: local_rate = lr · lr_mult)."""
    rng = np.random.default_rng(0)
    k0, b0 = (
        rng.standard_normal((3, 2)).astype(np.float32),
        rng.standard_normal(2).astype(np.float32),
    )
    kernel, bias = keras.Variable(k0, name="kernel"), keras.Variable(b0, name="bias")
    opt = CaffeSGD(learning_rate=0.1, momentum=0.9, weight_decay=0.01, bias_lr_mult=2.0)
    grads = [(rng.standard_normal((3, 2)), rng.standard_normal(2)) for _ in range(3)]
    vk, vb, wk, wb = 0.0, 0.0, k0.astype(np.float64), b0.astype(np.float64)
    for gk, gb in grads:
        opt.apply_gradients(
            [(tf.constant(gk, tf.float32), kernel), (tf.constant(gb, tf.float32), bias)]
        )
        vk = 0.9 * vk - 0.1 * (gk + 0.01 * wk)
        vb = 0.9 * vb - 0.2 * (gb + 0.01 * wb)
        wk, wb = wk + vk, wb + vb
    np.testing.assert_allclose(kernel.numpy(), wk, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), wb, rtol=1e-5, atol=1e-6)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert again.bias_lr_mult == 2.0


def test_build_optimizer_decays_biases_unless_told_not_to():
    bias = keras.Variable(np.ones(2, np.float32), name="bias")
    opt = build_optimizer(MNCConfig().optimizer)
    assert opt.bias_lr_mult == 2.0 and opt._use_weight_decay(bias)
    opt = build_optimizer(MNCConfig(bias_weight_decay=False, bias_lr_mult=1.0).optimizer)
    assert opt.bias_lr_mult == 1.0 and not opt._use_weight_decay(bias)


# ---------------------------------------------------------------- VGG-16 ImageNet weights


def _write_legacy_h5(path, layers):
    """A file in keras.applications' layout: ``layer_names`` attr, one group per layer with
    ``weight_names``. Constant arrays, gzip-compressed: VGG-16 shapes, a few KB on disk."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in layers]
        for name, arrays in layers.items():
            g = f.create_group(name)
            names = [f"{name}_W_1:0", f"{name}_b_1:0"][: len(arrays)]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, a in zip(names, arrays, strict=True):
                g.create_dataset(n, data=a, compression="gzip")


def _vgg_conv_layers():
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    return {
        layer.name: [np.full(w.shape, i + 0.5, np.float32) for w in layer.weights]
        for i, layer in enumerate(base.layers)
        if layer.weights
    }


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vgg")
    convs = _vgg_conv_layers()
    fc = {"fc1": [np.full((5, 3), 1.5, np.float32), np.full(3, 2.5, np.float32)]}
    fc["fc2"] = [np.full((3, 3), 3.5, np.float32), np.full(3, 4.5, np.float32)]
    full, notop, broken = d / "full.h5", d / "notop.h5", d / "broken.h5"
    _write_legacy_h5(full, {**convs, **fc})
    _write_legacy_h5(notop, convs)
    _write_legacy_h5(broken, {k: v for k, v in convs.items() if k != "block3_conv2"})
    return {"full": str(full), "notop": str(notop), "broken": str(broken), "convs": convs}


def test_vgg16_loads_conv_and_returns_fc_from_a_local_file(vgg_files, caplog):
    model, fc = vgg.build_vgg16(vgg_files["full"])
    for name in ("block1_conv1", "block3_conv2", "block5_conv3"):
        for got, want in zip(
            model.get_layer(name).get_weights(), vgg_files["convs"][name], strict=True
        ):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fc["fc1"][0], np.full((5, 3), 1.5))
    np.testing.assert_array_equal(fc["fc2"][1], np.full(3, 4.5))
    with caplog.at_level(logging.WARNING):
        _, fc = vgg.build_vgg16(vgg_files["notop"])
    assert fc is None and "fc6/fc7 start from random" in caplog.text
    with pytest.raises(ValueError, match=r"block3_conv2"):
        vgg.build_vgg16(vgg_files["broken"])


def test_vgg16_imagenet_uses_keras_download_and_cache(vgg_files, monkeypatch):
    from keras.src.applications import vgg16 as keras_vgg16

    calls = []

    def fake_get_file(fname, origin, cache_subdir, file_hash):
        calls.append((fname, origin, cache_subdir, file_hash))
        return vgg_files["full"]

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    _, fc = vgg.build_vgg16("imagenet")
    # The file keras.applications.VGG16(weights="imagenet") itself downloads (with the top).
    assert calls == [
        (
            "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            keras_vgg16.WEIGHTS_PATH,
            "models",
            "64373286793e3c8b2b4e3219cbf3544b",
        )
    ]
    assert fc is not None

    def failing_get_file(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", failing_get_file)
    with pytest.raises(OSError) as err:
        vgg.build_vgg16("imagenet")
    msg = str(err.value)
    assert "backbone_weights='imagenet'" in msg and keras_vgg16.WEIGHTS_PATH in msg
    assert "name resolution" in msg and "local path" in msg


def test_keras3_notop_weights_file_still_loads(tmp_path, caplog):
    """A Keras 3 ``.weights.h5`` of VGG16(include_top=False) loads as before (no fc)."""
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path = str(tmp_path / "vgg16_notop.weights.h5")
    base.save_weights(path)
    with caplog.at_level(logging.WARNING):
        model, fc = vgg.build_vgg16(path)
    assert fc is None and "Keras 3 .weights.h5" in caplog.text
    for name in ("block1_conv1", "block5_conv3"):
        for a, b in zip(
            model.get_layer(name).get_weights(), base.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_imagenet_fc_start_both_pathways(monkeypatch):
    """MNC wiring: the fc1/fc2 the backbone builder returns become fc6/fc7 of the box and
    mask pathways (a stand-in backbone with VGG's role, small shapes)."""
    rng = np.random.default_rng(0)
    c, fc_dim = 8, 6
    fc = {
        "fc1": (
            rng.normal(size=(7 * 7 * c, fc_dim)).astype(np.float32),
            rng.normal(size=fc_dim).astype(np.float32),
        ),
        "fc2": (
            rng.normal(size=(fc_dim, fc_dim)).astype(np.float32),
            rng.normal(size=fc_dim).astype(np.float32),
        ),
    }
    seen = []

    def fake_vgg(weights, freeze):
        seen.append(weights)
        return build_tiny(16, (4, 4, 4, 8), 1, c), fc

    monkeypatch.setattr(backbone_factory, "build_vgg16", fake_vgg)
    cfg = MNCConfig(fc_dim=fc_dim, mask_fc_dim=8, rpn_conv_filters=8, backbone_weights="imagenet")
    model = MNC(2, backbone="vgg16", num_stages=3, config=cfg)
    assert seen == ["imagenet"]
    for pathway in (model.class_head.box_pathway, model.class_head.mask_pathway):
        for suffix in ("fc1", "fc2"):
            got = pathway.get_layer(f"{pathway.name}_{suffix}").get_weights()
            np.testing.assert_array_equal(got[0], fc[suffix][0])
            np.testing.assert_array_equal(got[1], fc[suffix][1])
    saved = MNCConfig.from_dict(model.get_config()["config"])
    assert saved.backbone_options.weights is None  # no download on load
    with pytest.raises(ValueError, match=r"box_pathway_fc1 needs weights of shapes"):
        MNC(2, backbone="vgg16", num_stages=3, config=cfg.replace(fc_dim=4))
    with pytest.raises(ValueError, match=r"backbone_weights='imagenet' needs"):
        MNC(2, backbone="tiny", num_stages=3, config=make_tiny_config(backbone_weights="imagenet"))


def test_stage_bridge_appends_valid_gt_boxes_only():
    from mnc_tf.modeling.cascade import _append_gt

    rois = np.ones((2, 3, 4), np.float32)
    valid = np.array([[True, True, False], [True, False, False]])
    gt = np.array([[[-1] * 4, [1, 2, 3, 4], [5, 6, 7, 8]], [[9, 9, 10, 10], [-1] * 4, [-1] * 4]])
    gt_valid = np.array([[False, True, True], [True, False, False]])
    out, ok = _append_gt(tf.constant(rois), tf.constant(valid), gt.astype(np.float32), gt_valid)
    # Two GT columns (the most any image has), valid ones first, padding zeroed and invalid.
    np.testing.assert_array_equal(out[0, 3:], [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(out[1, 3:], [[9, 9, 10, 10], [0, 0, 0, 0]])
    np.testing.assert_array_equal(
        ok, [[True, True, False, True, True], [True, False, False, True, False]]
    )
    empty, ok = _append_gt(
        tf.constant(rois), tf.constant(valid), gt.astype(np.float32), gt_valid & False
    )
    assert empty.shape == (2, 3, 4) and ok.shape == (2, 3)
