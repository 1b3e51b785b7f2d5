"""`MNC`: Multi-task Network Cascades as a ``keras.Model`` (fit / evaluate / predict / save).

Figure 2 of the paper, in this package::

    images ──normalize──▶ backbone ──▶ features [B, h, w, C]
       stage 1  stage1_rpn.head ─▶ logits, deltas ─▶ stage1_rpn.proposals ─▶ boxes [B, P, 4]
       stage 2  stage2_mask: RoI warp ─▶ mask head ─▶ masks [B, R, m, m]
       stage 3  stage3_class: box + mask pathways ─▶ classes [B, R, N+1], deltas
       stage 4/5 (cascade.py) the same heads on stage 3's regressed boxes
       postprocess.py: per-class NMS ─▶ top K ─▶ mask voting

Training (``fit``) samples anchors (stage1_rpn.anchor_labeler) and RoIs
(stage2_mask.roi_sampler) by index only, so the RoI coordinates remain differentiable and the
mask and class losses reach the RPN box regression (``box_gradient``), and the class loss
reaches the mask head through the mask pathway.
"""

import contextlib
import os
import warnings

import keras
import tensorflow as tf

from mnc_tf.config import MNCConfig
from mnc_tf.core import box_ops
from mnc_tf.core import masks as mask_ops
from mnc_tf.modeling import losses as loss_lib
from mnc_tf.modeling import postprocess, sampling
from mnc_tf.modeling.cascade import Cascade, loss_terms
from mnc_tf.modeling.factory import build_mnc_parts
from mnc_tf.modeling.gradients import clip_gradient
from mnc_tf.modeling.inputs import array_to_tensor, prepare_inputs, prepare_targets
from mnc_tf.modeling.optim import build_optimizer
from mnc_tf.modeling.stage1_rpn.anchor_labeler import label_anchors, mix_index_labels
from mnc_tf.modeling.stage1_rpn.proposals import generate_proposals
from mnc_tf.modeling.stage2_mask.roi_sampler import sample_rois

_MODEL_KWARGS = ("name", "dtype", "trainable")


@keras.saving.register_keras_serializable(package="mnc_tf")
class MNC(keras.Model):
    """Instance segmentation by Multi-task Network Cascades (Dai, He, Sun, CVPR 2016).

    Args:
      num_classes: number of object classes ``N`` (labels ``1..N``; 0 is background).
      backbone: ``"vgg16"`` (paper), ``"resnet50"``, ``"resnet101"``, ``"tiny"`` or a
        ``keras.Model`` (contract in :mod:`mnc_tf.modeling.backbones.factory`).
      num_stages: 3 or 5 (any odd number ≥ 3 works: stages are a list).
      config: an :class:`MNCConfig` (or its dict); defaults to the paper's settings.
      class_names: optional ``N`` names, saved with the model.
      category_ids: optional ``N`` source dataset category ids (``category_ids[label-1]``).
      **overrides: :class:`MNCConfig` fields (e.g. ``mask_size=21``) or ``name``/``dtype``.
        ``dtype_policy`` (alias of ``dtype``): the Keras dtype policy every layer is built
        with, e.g. ``"mixed_bfloat16"`` (train / infer in bfloat16 with float32 weights) or
        ``"bfloat16"`` (weights stored in bfloat16 too; inference); default: the global
        policy. Boxes, losses, NMS and mask voting stay float32 (docs/precision.md).

    Call: ``model(images, training=False)`` with uint8 or float ``[B, H, W, 3]`` 0..255 RGB
    images, or the dataset ``features`` dict (``images``, optional ``image_info [B, 4, 2]``),
    returns ``boxes [B, K, 4]`` (pixels of the input image), ``scores [B, K]``, ``classes [B, K]``
    int32 (padding 0), ``masks [B, K, m, m]`` (soft masks in the boxes, after mask voting) and
    ``num_detections [B]`` (``K = max_detections``), see docs/CONTRACTS.md.

    Training: ``model.compile()`` (paper optimiser) then ``model.fit(dataset)`` where each
    element is ``(features, targets)`` with targets ``boxes [B, N, 4]``, ``labels [B, N]``,
    ``masks [B, N, H, W]`` padded with label -1. Every loss term is logged.
    """

    def __init__(
        self,
        num_classes,
        backbone="vgg16",
        num_stages=5,
        config=None,
        class_names=None,
        category_ids=None,
        **overrides,
    ):
        if "dtype_policy" in overrides:
            policy = overrides.pop("dtype_policy")
            if overrides.get("dtype") not in (None, policy):
                raise ValueError(
                    "pass dtype or dtype_policy, not both: got dtype="
                    f"{overrides['dtype']!r}, dtype_policy={policy!r}"
                )
            overrides["dtype"] = policy
        model_kwargs = {k: overrides.pop(k) for k in _MODEL_KWARGS if k in overrides}
        model_kwargs.setdefault("name", "mnc")
        if config is None:
            config = MNCConfig()
        elif isinstance(config, dict):
            config = MNCConfig.from_dict(config)
        elif not isinstance(config, MNCConfig):
            raise ValueError(f"config must be an MNCConfig or a dict, got {type(config).__name__}")
        config = config.replace(**overrides)
        super().__init__(**model_kwargs)
        # Under a 16-bit policy Keras would cast the inputs to bfloat16 / float16 (pixels of
        # resized images, image_info sizes and scales); prepare_inputs converts them itself.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        with _global_policy(model_kwargs.get("dtype")):
            parts = build_mnc_parts(num_classes, backbone, num_stages, config)
        if config.backbone_options.feature_stride is None:
            config = config.replace(feature_stride=parts.feature_stride)
        self.num_classes = int(num_classes)
        self.num_stages = int(num_stages)
        self.config = config
        self._backbone_spec = backbone if isinstance(backbone, str) else None
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names must have num_classes={num_classes} entries, got {len(class_names)}"
            )
        if category_ids is not None and len(category_ids) != num_classes:
            raise ValueError(
                f"category_ids must have num_classes={num_classes} entries, got {len(category_ids)}"
            )
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.category_ids = None if category_ids is None else [int(c) for c in category_ids]

        self.preprocessing = parts.preprocessing  # resize sides + pixel normalisation
        self.backbone = parts.backbone
        self.feature_stride = parts.feature_stride
        self.anchor_generator = parts.anchor_generator
        self.rpn_head = parts.rpn_head
        self.roi_warp = parts.roi_warp
        self.mask_head = parts.mask_head
        self.class_head = parts.class_head
        self.stages = parts.stages
        self.cascade = Cascade(self.stages, self.roi_warp, config, num_classes)
        # (loss name, term) of every logged loss; the term keys its weight.
        self._loss_terms = tuple(
            [("rpn_cls_loss", "rpn_cls"), ("rpn_box_loss", "rpn_box")]
            + loss_terms(self.stages, config.heads.det_classifier)
        )
        self._loss_weights = loss_lib.loss_weights(config.loss_weights)
        self.loss_names = [name for name, _ in self._loss_terms]
        self.loss_trackers = [keras.metrics.Mean(name=n) for n in self.loss_names]
        self.build()
        if parts.head_init is not None:
            # The released model's fc6/fc7 (both pathways) start from ImageNet VGG-16.
            self.class_head.load_pathway_fc(parts.head_init["fc1"], parts.head_init["fc2"])

    # ------------------------------------------------------------------ building
    def build(self, input_shape=None):
        """Create every weight (input shapes are dynamic, so no shape is needed)."""
        channels = self.backbone.output_shape[-1]
        s, m = self.config.heads.roi_pooled_size, self.config.heads.mask_size
        self.preprocessing.build((None, None, None, 3))
        self.rpn_head.build((None, None, None, channels))
        self.mask_head.build((None, s, s, channels))
        self.class_head.build((None, s, s, channels), (None, m, m))
        self.built = True

    # ------------------------------------------------------------------ inputs
    def __call__(self, inputs, *args, **kwargs):
        # Keras' own input conversion is off (see __init__), and Keras refuses a dict that
        # mixes tensors and NumPy arrays; convert arrays here: floats to float32 (Keras' rule
        # for a float32 model), integers (uint8 pixels) as they are.
        inputs = tf.nest.map_structure(array_to_tensor, inputs)
        return super().__call__(inputs, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def _features(self, images, training):
        features = self.backbone(self.preprocessing(images), training=training)
        logits, deltas = self.rpn_head(features, training=training)
        return features, logits, deltas, self.anchor_generator(features)

    def call(self, inputs, training=False):
        """Detections (see the class docstring); no Python loop over RoIs or instances."""
        images, image_size, _ = prepare_inputs(inputs)
        features, logits, deltas, anchors = self._features(images, training)
        proposals, _, valid = self._proposals(logits, deltas, anchors, image_size, inputs)
        boxes, masks, probs, valid = self.cascade.infer(
            features, image_size, proposals, valid, training=training
        )
        return postprocess.detect(boxes, masks, probs, valid, self.config.postprocess)

    def compute_losses(self, x, y, training=True, loss_scale=1.0):
        """All loss terms for a batch.

        Args:
          x: images ``[B, H, W, 3]`` or the features dict; y: the targets dict.
          loss_scale: the factor the caller multiplies the loss by before differentiating
            (mixed-precision loss scaling); the end-to-end gradient clamps are per image.

        Returns:
          dict name → float32 scalar: every term of :attr:`loss_names` (mean over the local
          batch of per-image losses, unweighted) and ``"loss"``, their weighted sum.
        """
        cfg = self.config
        images, image_size, image_ids = prepare_inputs(x)
        gt = prepare_targets(y, images, self.num_classes)
        batch = tf.shape(images)[0]
        features, logits, deltas, anchors = self._features(images, training)

        step = self.optimizer.iterations if getattr(self, "optimizer", None) is not None else 0
        seeds = sampling.image_seeds(
            batch, step, cfg.sampling_seed, cfg.deterministic_sampling, image_ids, gt["boxes"]
        )
        # Stage 1 targets and losses.
        anchor_keys = sampling.uniform(seeds, tf.shape(anchors)[0], sampling.SALT_ANCHORS)
        labels, matched_boxes, inside = label_anchors(
            anchors, gt["boxes"], gt["valid"], image_size, anchor_keys, cfg.rpn, return_inside=True
        )
        # Proposals (differentiable w.r.t. the RPN deltas) → RoI sample → stages 2..n.
        # d(differentiated loss)/d(one image's loss): batch mean, replicas, loss scale.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        grad_scale = tf.cast(loss_scale, tf.float32) / tf.cast(batch * replicas, tf.float32)
        prop_deltas = clip_gradient(deltas, cfg.cascade.proposal_gradient_clip, grad_scale)
        proposals, _, valid, proposal_anchors = self._proposals(
            logits, prop_deltas, anchors, image_size, x, train=True
        )
        roi_keys = sampling.uniform(
            seeds, tf.shape(proposals)[1] + tf.shape(gt["boxes"])[1], sampling.SALT_ROIS
        )
        sample = sample_rois(
            proposals, valid, gt["boxes"], gt["labels"], gt["valid"], roi_keys, cfg.roi_sampling
        )
        if cfg.rpn.mix_index:
            # Anchors behind the sampled RoIs join the RPN losses (released MIX_INDEX).
            num_props = tf.shape(proposals)[1]
            from_prop = sample["valid"] & (sample["index"] < num_props)
            roi_anchors = tf.where(
                from_prop,
                tf.gather(
                    proposal_anchors, tf.minimum(sample["index"], num_props - 1), batch_dims=1
                ),
                -1,
            )
            labels = mix_index_labels(
                labels, inside, roi_anchors, sample["fg"], sample["valid"] & ~sample["fg"]
            )
        target_deltas = box_ops.encode(matched_boxes, anchors[None])
        rpn_cls, rpn_box = loss_lib.rpn_losses(
            logits, deltas, labels, target_deltas, cfg.rpn.smooth_l1_beta
        )
        per_image = {"rpn_cls_loss": rpn_cls, "rpn_box_loss": rpn_box}
        per_image.update(self.cascade.train(features, image_size, sample, gt, grad_scale, training))
        out = {name: tf.reduce_mean(per_image[name]) for name in self.loss_names}
        out["loss"] = loss_lib.weighted_sum(out, self._loss_terms, self._loss_weights)
        return out

    def _proposals(self, logits, deltas, anchors, image_size, inputs, train=False):
        """Stage 1's proposals with the ``train`` (else test) top-k settings:
        :func:`generate_proposals`' outputs (``train``: with the anchor indices too)."""
        cfg = self.config
        return generate_proposals(
            logits,
            deltas,
            anchors,
            image_size,
            cfg.rpn.pre_nms_topk_train if train else cfg.rpn.pre_nms_topk_test,
            cfg.rpn.post_nms_topk_train if train else cfg.rpn.post_nms_topk_test,
            cfg.rpn.nms_iou,
            cfg.rpn.min_size,
            cfg.rpn.min_size_before_topk,
            self._min_size_scale(inputs),
            return_anchor_indices=train,
        )

    def _min_size_scale(self, inputs):
        """float32 ``[B]`` image scale (``image_info`` row 2) multiplying ``rpn_min_size``
        (``rpn_min_size_scaled``), or None (scale 1) when the inputs carry no image_info."""
        if not self.config.rpn.min_size_scaled or not isinstance(inputs, dict):
            return None
        info = inputs.get("image_info")
        if info is None:
            return None
        return tf.reduce_mean(tf.cast(info, tf.float32)[:, 2, :], axis=-1)

    # ------------------------------------------------------------------ Keras training API
    def fit(self, x=None, y=None, *args, shuffle=None, **kwargs):
        """Keras ``fit``; ``shuffle`` defaults to False for a ``tf.data`` (or distributed)
        dataset — it shuffles itself, and Keras' default ``True`` only warns that it is ignored.
        """
        if shuffle is None:
            shuffle = not (isinstance(x, tf.data.Dataset) or hasattr(x, "element_spec"))
        return super().fit(x, y, *args, shuffle=shuffle, **kwargs)

    def compile(self, optimizer=None, loss=None, jit_compile=False, **kwargs):
        """Keras ``compile``; with no ``optimizer`` uses the config's (paper: SGD momentum 0.9,
        weight decay 5e-4, lr 1e-3 ×0.1 for the last 20% of ``total_steps``).

        ``loss`` must be None (MNC computes its own multi-task loss). ``jit_compile`` is
        always False: the RoI warp custom op has no XLA kernel.
        """
        if loss is not None:
            raise ValueError("loss must be None: MNC computes its own losses (see compute_losses)")
        if jit_compile not in (False, None, "auto"):
            warnings.warn(
                "MNC.compile: jit_compile forced to False (the RoI warp op has no XLA kernel)",
                stacklevel=2,
            )
        if optimizer is None:
            optimizer = build_optimizer(self.config.optimizer)
        super().compile(optimizer=optimizer, jit_compile=False, **kwargs)

    def compile_from_config(self, config):
        """Re-compile a loaded model with its saved optimizer (``keras.models.load_model``)."""
        config = keras.saving.deserialize_keras_object(config)
        config.pop("jit_compile", None)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Total loss, scaled for distribution as Keras' ``compute_loss`` (÷ replicas)."""
        return _scale_for_replicas(self.compute_losses(x, y, training=training)["loss"])

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("MNC.fit needs (features, targets) elements; got no targets")
        # The mixed-precision loss scale (1 for a plain optimizer).
        loss_scale = self.optimizer.scale_loss(tf.constant(1.0))
        with tf.GradientTape() as tape:
            terms = self.compute_losses(x, y, training=True, loss_scale=loss_scale)
            # Each replica's loss is the mean over its local images; dividing by the number
            # of replicas makes the all-reduced (summed) gradients the global-batch mean.
            loss = self.optimizer.scale_loss(_scale_for_replicas(terms["loss"]))
        variables = self.trainable_weights
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        self.optimizer.apply_gradients(pairs)
        return self._update_trackers(terms)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("MNC.evaluate needs (features, targets) elements; got no targets")
        return self._update_trackers(self.compute_losses(x, y, training=False))

    def _update_trackers(self, terms):
        if self._loss_tracker is not None:
            self._loss_tracker.update_state(terms["loss"])
        for tracker in self.loss_trackers:
            tracker.update_state(terms[tracker.name])
        logs = {
            "loss": terms["loss"] if self._loss_tracker is None else self._loss_tracker.result()
        }
        logs.update({t.name: t.result() for t in self.loss_trackers})
        return logs

    # ------------------------------------------------------------------ helpers
    def full_image_masks(self, detections, image_size, threshold=None):
        """Paste ``detections["masks"]`` into binary image masks uint8 ``[B, K, H, W]``
        (``threshold`` defaults to ``mask_binarize_threshold``, 0.4)."""
        t = self.config.postprocess.mask_threshold if threshold is None else threshold
        return mask_ops.paste_masks_batched(
            detections["masks"], detections["boxes"], detections["num_detections"], image_size, t
        )

    def export_serving(self, export_dir, version=None, overwrite=False):
        """Write a TF Serving SavedModel to ``export_dir/<version>/`` (stock TF ops only).

        ``model.export_serving("export/")`` writes ``export/1/``; a path that already ends in
        a version number, ``model.export_serving("export/3")``, is taken as the version
        directory itself. See :func:`mnc_tf.export.serving.export_serving`; returns the
        version directory.
        """
        from mnc_tf.export.serving import export_serving

        if version is None:
            path = os.path.normpath(os.fspath(export_dir))
            base = os.path.basename(path)
            if base.isdigit():
                export_dir, version = os.path.dirname(path) or ".", int(base)
            else:
                version = 1
        return export_serving(self, export_dir, version=version, overwrite=overwrite)

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        config = self.config.replace(backbone_weights=None)  # weights travel in the .keras file
        backbone = self._backbone_spec
        if backbone is None:
            backbone = keras.saving.serialize_keras_object(self.backbone)
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "num_classes": self.num_classes,
            "backbone": backbone,
            "num_stages": self.num_stages,
            "config": config.to_dict(),
            "class_names": None if self.class_names is None else list(self.class_names),
            "category_ids": None if self.category_ids is None else list(self.category_ids),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)


@contextlib.contextmanager
def _global_policy(policy):
    """Builds the parts under ``policy`` (None: the current global policy) — Keras layers
    take the global policy when created, not their parent's."""
    if policy is None:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _scale_for_replicas(loss):
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * (1.0 / replicas)
