"""The MNC keras.Model: shapes per stage, errors, gradient paths, save/load, fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from modeling_testutil import make_shapes, make_tiny_config

from mnc_tf.config import MNCConfig
from mnc_tf.modeling import MNC
from mnc_tf.modeling.stage1_rpn.proposals import generate_proposals
from mnc_tf.modeling.stage2_mask.roi_features import warp_rois


@pytest.fixture(scope="module")
def model5():
    return MNC(3, backbone="tiny", num_stages=5, config=make_tiny_config())


@pytest.fixture(scope="module")
def batch():
    return make_shapes(2, seed=1)


def test_outputs_shapes_and_dtypes(model5, batch):
    images, _ = batch
    for inputs in (
        images,
        {
            "images": images,
            "image_info": np.tile([[[64, 64], [64, 64], [1, 1], [0, 0]]], (2, 1, 1)).astype(
                np.float32
            ),
        },
    ):
        out = model5(inputs, training=False)
        assert set(out) == {"boxes", "scores", "classes", "masks", "num_detections"}
        assert out["boxes"].shape == (2, 10, 4) and out["boxes"].dtype == tf.float32
        assert out["scores"].shape == (2, 10) and out["scores"].dtype == tf.float32
        assert out["classes"].shape == (2, 10) and out["classes"].dtype == tf.int32
        assert out["masks"].shape == (2, 10, 14, 14) and out["masks"].dtype == tf.float32
        assert out["num_detections"].shape == (2,) and out["num_detections"].dtype == tf.int32
        k = out["num_detections"].numpy()
        for b in range(2):
            assert np.all(out["classes"][b, : k[b]] >= 1) and np.all(out["classes"][b, : k[b]] <= 3)
            assert np.all(out["classes"][b, k[b] :] == 0)
            assert np.all(out["boxes"][b, : k[b], 2:] <= 64.0 + 1e-4)
    pasted = model5.full_image_masks(out, (64, 64))
    assert pasted.shape == (2, 10, 64, 64) and pasted.dtype == tf.uint8


def test_every_stage_shapes(model5, batch):
    images, _ = batch
    cfg = model5.config
    features, logits, deltas, anchors = model5._features(tf.constant(images), False)
    assert features.shape == (2, 8, 8, 16)  # stride 8, tiny_out_channels 16
    a = 8 * 8 * 9
    assert logits.shape == (2, a) and deltas.shape == (2, a, 4) and anchors.shape == (a, 4)
    assert logits.dtype == deltas.dtype == tf.float32
    props, scores, valid = generate_proposals(logits, deltas, anchors, [[64.0, 64.0]] * 2, 200, 32)
    assert props.shape == (2, 32, 4) and scores.shape == (2, 32) and valid.shape == (2, 32)
    warped = warp_rois(model5.roi_warp, features, props)
    assert warped.shape == (64, cfg.heads.roi_pooled_size, cfg.heads.roi_pooled_size, 16)
    mask_logits = model5.mask_head(warped)
    assert mask_logits.shape == (64, 14, 14) and mask_logits.dtype == tf.float32
    cls_logits, box_deltas = model5.class_head(warped, tf.sigmoid(mask_logits))
    assert cls_logits.shape == (64, 4) and box_deltas.shape == (64, 4, 4)
    boxes, masks, probs, valid_all = model5.cascade.infer(
        features, [[64.0, 64.0]] * 2, props, valid
    )
    assert boxes.shape == (2, 64, 4) and masks.shape == (2, 64, 14, 14)  # 2 class stages merged
    assert probs.shape == (2, 64, 4) and valid_all.shape == (2, 64)
    np.testing.assert_allclose(tf.reduce_sum(probs, -1), np.ones((2, 64)), rtol=1e-5)


def test_losses_and_names(model5, batch):
    images, targets = batch
    losses = model5.compute_losses({"images": images, "image_id": np.array([1, 2])}, targets)
    expected = [
        "rpn_cls_loss",
        "rpn_box_loss",
        "mask_loss",
        "cls_loss",
        "det_cls_loss",
        "box_loss",
        "mask_loss_4",
        "cls_loss_5",
        "det_cls_loss_5",
        "box_loss_5",
    ]
    assert model5.loss_names == expected
    assert set(losses) == set(expected) | {"loss"}
    for v in losses.values():
        assert v.shape == () and np.isfinite(v.numpy())
    # Released loss weights: 2 on the mask losses, 1 elsewhere.
    total = sum((2.0 if k.startswith("mask_loss") else 1.0) * losses[k] for k in expected)
    np.testing.assert_allclose(losses["loss"], total, rtol=1e-5)
    # Fresh heads: mask BCE ≈ log 2, RPN BCE ≈ log 2.
    np.testing.assert_allclose(losses["mask_loss"], np.log(2.0), atol=0.05)
    np.testing.assert_allclose(losses["rpn_cls_loss"], np.log(2.0), atol=0.05)


def test_deterministic_sampling_reproducible(model5, batch):
    images, targets = batch
    a = model5.compute_losses({"images": images, "image_id": np.array([5, 6])}, targets)
    b = model5.compute_losses({"images": images, "image_id": np.array([5, 6])}, targets)
    for k in a:
        assert float(a[k]) == float(b[k])


def test_three_stage_model(batch):
    images, targets = batch
    model = MNC(2, backbone="tiny", num_stages=3, config=make_tiny_config(det_classifier=False))
    assert [s.number for s in model.stages] == [2, 3]
    assert model.loss_names == ["rpn_cls_loss", "rpn_box_loss", "mask_loss", "cls_loss", "box_loss"]
    assert model.class_head.det_cls is None
    out = model(images)
    assert out["classes"].shape == (2, 10)
    targets = dict(targets, labels=np.minimum(targets["labels"], 2))
    assert np.isfinite(model.compute_losses(images, targets)["loss"].numpy())


def test_bad_arguments_raise_clear_errors(model5, batch, tmp_path):
    images, targets = batch
    with pytest.raises(ValueError, match="images must be"):
        model5(images[0])
    with pytest.raises(ValueError, match="num_classes"):
        MNC(0, backbone="tiny", config=make_tiny_config())
    with pytest.raises(ValueError, match="backbone"):
        MNC(3, backbone="vgg19", config=make_tiny_config())
    with pytest.raises(ValueError, match="num_stages"):
        MNC(3, backbone="tiny", num_stages=4, config=make_tiny_config())
    with pytest.raises(ValueError, match="'mask_sise'.*'mask_size'"):
        MNC(3, backbone="tiny", config=make_tiny_config(), mask_sise=7)
    with pytest.raises(FileNotFoundError, match="backbone_weights"):
        MNC(3, backbone="tiny", config=make_tiny_config(), backbone_weights=str(tmp_path / "no.h5"))
    with pytest.raises(ValueError, match="class_names"):
        MNC(3, backbone="tiny", config=make_tiny_config(), class_names=["a"])
    with pytest.raises(ValueError, match="masks"):
        model5.compute_losses(images, {"boxes": targets["boxes"], "labels": targets["labels"]})
    with pytest.raises(ValueError, match="spatial size"):
        model5.compute_losses(images, dict(targets, masks=targets["masks"][:, :, :32]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        model5.compute_losses(images, dict(targets, labels=targets["labels"] * 5))


def test_empty_images_and_all_padding_targets(model5, batch):
    images = np.full((2, 64, 64, 3), 80.0, np.float32)
    targets = {
        "boxes": -np.ones((2, 4, 4), np.float32),
        "labels": -np.ones((2, 4), np.int32),
        "masks": np.zeros((2, 4, 64, 64), np.uint8),
    }
    with tf.GradientTape() as tape:
        losses = model5.compute_losses(images, targets)
    grads = tape.gradient(losses["loss"], model5.trainable_weights)
    for k, v in losses.items():
        assert np.isfinite(v.numpy()), k
    assert float(losses["mask_loss"]) == 0.0 and float(losses["box_loss"]) == 0.0
    assert float(losses["rpn_box_loss"]) == 0.0
    assert all(g is None or np.all(np.isfinite(g.numpy())) for g in grads)
    # One image without objects next to one with objects: its terms are simply 0.
    mixed_images, mixed = batch
    mixed = {k: v.copy() for k, v in mixed.items()}
    mixed["boxes"][1], mixed["labels"][1], mixed["masks"][1] = -1.0, -1, 0
    both = model5.compute_losses(mixed_images, mixed)
    first = model5.compute_losses(mixed_images[:1], {k: v[:1] for k, v in mixed.items()})
    np.testing.assert_allclose(both["mask_loss"], first["mask_loss"] / 2, rtol=1e-5)
    assert all(np.isfinite(v.numpy()) for v in both.values())


def _gt_on_anchor():
    """One 32 px square overlapping several anchors by IoU > 0.5 (foreground proposals)."""
    images = np.full((1, 64, 64, 3), 70.0, np.float32)
    images[0, 16:48, 16:48] = [200, 50, 50]
    masks = np.zeros((1, 4, 64, 64), np.uint8)
    masks[0, 0, 16:48, 16:48] = 1
    boxes = -np.ones((1, 4, 4), np.float32)
    boxes[0, 0] = [16, 16, 48, 48]
    labels = np.array([[1, -1, -1, -1]], np.int32)
    return images, {"boxes": boxes, "labels": labels, "masks": masks}


# Every anchor enters NMS, so (untrained, near-random objectness) proposals cover the object.
_ALL_PROPOSALS = dict(rpn_pre_nms_topk_train=1000, rpn_post_nms_topk_train=200)


@pytest.mark.parametrize("box_gradient", [True, False])
def test_mask_loss_reaches_rpn_box_regression(box_gradient):
    keras.utils.set_random_seed(0)
    model = MNC(
        1,
        backbone="tiny",
        num_stages=3,
        config=make_tiny_config(
            box_gradient=box_gradient, add_gt_as_proposals=False, **_ALL_PROPOSALS
        ),
    )
    images, targets = _gt_on_anchor()
    kernel = model.rpn_head.box_kernel
    with tf.GradientTape() as tape:
        losses = model.compute_losses(images, targets)
    grad = tape.gradient(losses["mask_loss"], kernel)
    assert float(losses["mask_loss"]) > 0  # foreground RoIs exist, all from proposals
    if box_gradient:
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
    else:
        assert grad is None or float(tf.reduce_max(tf.abs(grad))) == 0.0


def test_class_loss_reaches_mask_head():
    keras.utils.set_random_seed(1)
    model = MNC(
        1,
        backbone="tiny",
        num_stages=3,
        config=make_tiny_config(cls_mask_iou_threshold=0.0, **_ALL_PROPOSALS),
    )
    images, targets = _gt_on_anchor()
    with tf.GradientTape() as tape:
        losses = model.compute_losses(images, targets)
    grads = tape.gradient(losses["cls_loss"], model.mask_head.trainable_weights)
    assert len(grads) == 4 and all(g is not None for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_save_load_round_trip(tmp_path, batch):
    images, _ = batch
    model = MNC(
        3,
        backbone="tiny",
        num_stages=5,
        config=make_tiny_config(),
        class_names=["square", "disc", "other"],
        category_ids=[10, 20, 30],
    )
    model.compile()
    before = model.predict(images, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, MNC)
    # Re-compiled with the saved optimizer (resumable), jit stays off.
    assert isinstance(loaded.optimizer, keras.optimizers.Adam) and loaded.jit_compile is False
    assert loaded.class_names == ["square", "disc", "other"] and loaded.category_ids == [10, 20, 30]
    assert loaded.config == model.config and loaded.num_stages == 5
    after = loaded.predict(images, verbose=0)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_layers_serialise():
    model = MNC(2, backbone="tiny", num_stages=3, config=make_tiny_config())
    for layer in [
        model.rpn_head,
        model.mask_head,
        model.class_head,
        model.roi_warp,
        model.preprocessing,
    ]:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_user_backbone_contract(tmp_path, batch):
    images, _ = batch
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    user = keras.Model(inputs, x)
    with pytest.raises(ValueError, match="feature_stride"):
        MNC(3, backbone=user, num_stages=3, config=make_tiny_config(feature_stride=None))
    user.feature_stride = 8
    model = MNC(3, backbone=user, num_stages=3, config=make_tiny_config(feature_stride=None))
    assert (
        model.config.backbone_options.feature_stride == 8
        and model.config.input.normalization is None
    )
    out = model.predict(images, verbose=0)
    path = str(tmp_path / "u.keras")
    model.save(path)
    np.testing.assert_array_equal(
        keras.models.load_model(path).predict(images, verbose=0)["masks"], out["masks"]
    )


def test_compile_defaults_are_the_papers():
    model = MNC(
        2,
        backbone="tiny",
        num_stages=3,
        config=make_tiny_config(
            optimizer="sgd", learning_rate=1e-3, weight_decay=5e-4, warmup_steps=0, total_steps=100
        ),
    )
    model.compile()
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == 0.9 and opt.weight_decay == 5e-4
    assert model.jit_compile is False
    lr = opt.learning_rate  # the schedule, evaluated at a step
    sched = opt._learning_rate
    np.testing.assert_allclose(
        [float(sched(s)) for s in (0, 79, 80, 99)], [1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6
    )
    assert lr is not None


def test_fit_learns_and_logs_every_term():
    images, targets = make_shapes(4, seed=3)
    keras.utils.set_random_seed(0)
    config = make_tiny_config(learning_rate=3e-3, warmup_steps=10, total_steps=200)
    model = MNC(2, backbone="tiny", num_stages=3, config=config)
    model.compile()
    ds = tf.data.Dataset.from_tensor_slices(({"images": images}, targets)).batch(2).repeat()
    hist = model.fit(ds, steps_per_epoch=50, epochs=4, verbose=0, validation_data=ds.take(1))
    h = hist.history
    for name in model.loss_names + ["loss"]:
        assert name in h and "val_" + name in h
    assert h["loss"][-1] < 0.4 * h["loss"][0]
    assert h["mask_loss"][-1] < 0.5 * h["mask_loss"][0]
    out = model.predict(images, verbose=0)
    pasted = model.full_image_masks(out, (64, 64)).numpy().astype(bool)
    # Every training object is found: a confident detection of its class covers its mask.
    for i in range(4):
        for j in np.where(targets["labels"][i] > 0)[0]:
            gt = targets["masks"][i, j].astype(bool)
            ious = [
                (gt & pasted[i, d]).sum() / (gt | pasted[i, d]).sum()
                for d in range(out["num_detections"][i])
                if out["classes"][i, d] == targets["labels"][i, j] and out["scores"][i, d] > 0.5
            ]
            assert max(ious, default=0.0) > 0.6, (i, j, ious)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_without_nans(policy):
    images, targets = make_shapes(2, seed=5)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = MNC(2, backbone="tiny", num_stages=5, config=make_tiny_config())
        model.compile()
        assert model.backbone.layers[1].compute_dtype == policy.split("_")[1]
        ds = tf.data.Dataset.from_tensor_slices(({"images": images}, targets)).batch(2).repeat()
        h = model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0).history
        assert all(np.isfinite(v[-1]) for v in h.values())
        out = model(images)
        assert out["boxes"].dtype == tf.float32 and np.all(np.isfinite(out["masks"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_standard_backbones_build_at_stride_16():
    for name, channels in [("vgg16", 512), ("resnet50", 1024)]:
        model = MNC(
            2,
            backbone=name,
            num_stages=3,
            config=MNCConfig(fc_dim=16, mask_fc_dim=16, rpn_conv_filters=16),
        )
        feats = model.backbone(model.preprocessing(tf.zeros([1, 64, 96, 3])))
        assert feats.shape == (1, 4, 6, channels), name
        assert model.feature_stride == 16 and model.preprocessing.mode == "caffe"
        frozen = {w.path.split("/")[0] for w in model.backbone.non_trainable_weights}
        if name == "vgg16":
            assert frozen == {"block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"}
