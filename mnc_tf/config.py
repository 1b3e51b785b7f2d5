"""`MNCConfig`: every hyper-parameter of the MNC model in one dataclass.

Defaults are the paper's (Dai, He, Sun, CVPR 2016) and its released code's, see
``DESIGN.md`` §1. Override per field (``MNCConfig(mask_size=21)``), from a dict / YAML
(``MNCConfig.from_yaml(text)``) or through ``MNC(..., **overrides)``. Unknown keys raise a
``ValueError`` naming the key and the closest valid one.

Things that are *not* here because they are arguments of :class:`mnc_tf.MNC`:
``num_classes``, ``backbone`` and ``num_stages``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import yaml

_NORMALIZATIONS = (None, "caffe", "scale", "none")
_OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclasses.dataclass
class MNCConfig:
    """Hyper-parameters of MNC (paper defaults). All sizes are in input-image pixels.

    Groups: input; backbone; stage 1 (RPN); stage 2 (masks); stage 3 (classes); loss
    weights; inference; sampling; optimiser. See the field comments for the meaning.
    """

    # ---- input (DESIGN.md §4) ----
    short_side: int = 600  # resized shorter image side
    max_side: int = 1000  # cap on the resized longer side
    max_instances: int = 100  # padded number of ground-truth instances per image
    # Pixel normalisation applied by the model to 0..255 RGB input: "caffe" (RGB→BGR minus the
    # ImageNet means, as keras.applications VGG/ResNet expect), "scale" (x/127.5 - 1) or
    # "none". None picks the backbone's own: caffe for vgg16/resnet*, scale for tiny, none for
    # a user model.
    input_normalization: str | None = None

    # ---- backbone ----
    # None (random init), "imagenet" (keras.applications' download-and-cache; for vgg16 the
    # file with the fc layers, so the class stage's fc6/fc7 start from ImageNet as in the
    # released model) or a local .h5 / .weights.h5 file.
    backbone_weights: str | None = None
    freeze_early_layers: bool = True  # vgg conv1–2 / resnet stem+conv2 frozen (paper)
    # Stride of the feature map. None: 16 for vgg16/resnet/tiny, the user model's
    # ``feature_stride`` attribute otherwise. "tiny" accepts 4, 8, 16 or 32.
    feature_stride: int | None = None
    tiny_filters: tuple = (32, 64, 128, 256, 256)  # channels of tiny's stages (one per ×2)
    tiny_convs_per_stage: int = 2
    tiny_out_channels: int | None = None  # 1×1 projection of tiny's output (None: none)

    # ---- stage 1: RPN ----
    anchor_base_size: float = 16.0
    anchor_ratios: tuple = (0.5, 1.0, 2.0)  # h / w
    anchor_scales: tuple = (8.0, 16.0, 32.0)  # anchor side = base_size · scale
    rpn_conv_filters: int = 512
    rpn_pre_nms_topk_train: int = 12000
    rpn_post_nms_topk_train: int = 300
    rpn_pre_nms_topk_test: int = 6000
    rpn_post_nms_topk_test: int = 300
    rpn_nms_iou: float = 0.7
    # Proposals with a side below rpn_min_size are dropped. Released code: the size is in
    # *original* image pixels (multiplied by the image scale, image_info row 2) and the filter
    # runs before the pre-NMS top-k. False / False: input pixels, after the top-k.
    rpn_min_size: float = 16.0
    rpn_min_size_scaled: bool = True
    rpn_min_size_before_topk: bool = True
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    # Anchors reaching further than this outside the image are ignored in training
    # (Faster R-CNN uses 0); negative keeps every anchor.
    rpn_allowed_border: float = 0.0
    rpn_smooth_l1_beta: float = 1.0 / 9.0  # sigma = 3 in the Caffe code
    # Released MIX_INDEX: after the 256-anchor sample, the anchor behind every sampled
    # stage-2 RoI that came from a proposal is labelled 1 (RoI foreground) or 0 (background).
    rpn_mix_index: bool = True

    # ---- stage 2: masks ----
    roi_batch_size_per_image: int = 64
    roi_fg_fraction: float = 0.3  # released code (paper: ~25%)
    roi_fg_iou: float = 0.5
    roi_bg_iou_high: float = 0.5
    roi_bg_iou_low: float = 0.1
    # Shares of the background slots (R - #fg) drawn from IoU [low, high) and [0, low), each
    # rounded and capped by what is available, as the released layer (0.85, 0.15). None:
    # [low, high) first, [0, low) fills whatever is missing.
    roi_bg_split: tuple | None = (0.85, 0.15)
    add_gt_as_proposals: bool = True
    roi_crop_size: int = 28  # RoI warp output before the 2×2 max-pool
    roi_pooled_size: int = 14  # after the max-pool
    mask_size: int = 28  # m (released code: 21)
    mask_fc_dim: int = 256
    mask_target_threshold: float = 0.5  # binarisation of the cropped GT mask

    # ---- stage 3: categories ----
    class_pool_size: int = 7  # pathways max-pool the warped features to this size
    fc_dim: int = 4096  # width of the two fc layers of each pathway
    # Mask-level labels (released MaskLayer): a box-foreground RoI keeps its class only if its
    # predicted mask, binarised at cls_mask_binarize_threshold and pasted in the RoI, has at
    # least this IoU with the matched object's whole GT mask (0 → box-level labels).
    cls_mask_iou_threshold: float = 0.5
    cls_mask_binarize_threshold: float = 0.4
    # Released stages 3/5 also train a box-level classifier (cls_score / loss_cls, labels by
    # box IoU) on the same features; it is not used at test time (det_cls_loss).
    det_classifier: bool = True
    # Released MaskLayer.backward: the class losses reach the mask head (through mask
    # pooling) only from RoIs that are mask-level foreground. False: from every RoI.
    mask_pathway_grad_fg_only: bool = True
    box_regression_weights: tuple = (10.0, 10.0, 5.0, 5.0)
    box_smooth_l1_beta: float = 1.0

    # ---- end to end ----
    box_gradient: bool = True  # losses back-propagate through the RoI coordinates
    # Per-image, per-element clamps of the gradient that stage-2+ losses send into the
    # regression outputs (released prototxt: clip_base 512 for both the proposal layer and
    # the stage bridge; None: off).
    proposal_gradient_clip: float | None = 1.0 / 512
    bridge_gradient_clip: float | None = 1.0 / 512
    # Released stage bridge (training): the GT boxes join the regressed RoIs of stages 4/5.
    bridge_add_gt: bool = True

    # ---- loss weights ----
    rpn_cls_loss_weight: float = 1.0
    rpn_box_loss_weight: float = 1.0
    mask_loss_weight: float = 2.0  # released prototxt: loss_weight 2 (stages 2 and 4)
    cls_loss_weight: float = 1.0
    det_cls_loss_weight: float = 1.0
    box_loss_weight: float = 1.0

    # ---- inference ----
    detection_nms_iou: float = 0.3  # per-class NMS
    max_detections: int = 100
    detection_score_threshold: float = 0.0
    detection_pre_nms_topk: int = 4000  # (instance, class) pairs entering the class NMS
    mask_voting: bool = True
    mask_voting_iou: float = 0.5
    # Voting averages the best-scoring this-many same-class candidates with box IoU ≥ 0.5
    # (bounds memory: K · this · m² floats per image).
    mask_voting_max_candidates: int = 32
    # Released tester: each voted instance is re-boxed to the tight box of its voted mask
    # (pixels > mask_binarize_threshold). False: the voted mask stays in the kept box.
    mask_voting_rebox: bool = True
    mask_binarize_threshold: float = 0.4
    # Score threshold of the detections the tools draw and write (mnc-predict, Predictor,
    # visualize.draw_instances); evaluation scores every detection.
    predict_score_threshold: float = 0.5

    # ---- sampling ----
    # True: anchor/RoI samplers draw from stateless RNGs seeded by (sampling_seed, step,
    # image_id or a fingerprint of the image's targets), so a run is reproducible and
    # independent of how a global batch is split across replicas.
    deterministic_sampling: bool = False
    sampling_seed: int = 0

    # ---- optimiser (used by ``MNC.compile()`` with no optimizer) ----
    optimizer: str = "sgd"  # "sgd", "adam" or "adamw"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    total_steps: int = 40000  # paper: 32k + 8k iterations
    lr_drop_fraction: float = 0.2  # the last 20% of total_steps run at lr · lr_drop_factor
    lr_drop_factor: float = 0.1
    warmup_steps: int = 0  # linear warm-up from 0
    clipnorm: float | None = None
    # Caffe param { lr_mult } of the released prototxt: biases learn at 2x (optimizer "sgd"
    # only), and weight decay applies to biases too (no decay_mult there, so 1).
    bias_lr_mult: float = 2.0
    bias_weight_decay: bool = True

    def __post_init__(self):
        for name in (
            "anchor_ratios",
            "anchor_scales",
            "box_regression_weights",
            "tiny_filters",
            "roi_bg_split",
        ):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self):
        """Raise ``ValueError`` naming the first inconsistent field."""

        def need(cond, field, expected):
            if not cond:
                raise ValueError(
                    f"MNCConfig.{field} must be {expected}, got {getattr(self, field)!r}"
                )

        need(self.short_side > 0, "short_side", "> 0")
        need(self.max_side >= self.short_side, "max_side", f">= short_side ({self.short_side})")
        need(self.max_instances >= 1, "max_instances", ">= 1")
        need(
            self.input_normalization in _NORMALIZATIONS,
            "input_normalization",
            f"one of {_NORMALIZATIONS}",
        )
        need(self.feature_stride is None or self.feature_stride > 0, "feature_stride", "> 0")
        need(
            len(self.anchor_ratios) >= 1 and min(self.anchor_ratios) > 0,
            "anchor_ratios",
            "a non-empty tuple of positive numbers",
        )
        need(
            len(self.anchor_scales) >= 1 and min(self.anchor_scales) > 0,
            "anchor_scales",
            "a non-empty tuple of positive numbers",
        )
        need(self.anchor_base_size > 0, "anchor_base_size", "> 0")
        need(0 < self.rpn_nms_iou <= 1, "rpn_nms_iou", "in (0, 1]")
        need(0 < self.detection_nms_iou <= 1, "detection_nms_iou", "in (0, 1]")
        need(self.rpn_post_nms_topk_train >= 1, "rpn_post_nms_topk_train", ">= 1")
        need(self.rpn_post_nms_topk_test >= 1, "rpn_post_nms_topk_test", ">= 1")
        need(self.rpn_pre_nms_topk_train >= 1, "rpn_pre_nms_topk_train", ">= 1")
        need(self.rpn_pre_nms_topk_test >= 1, "rpn_pre_nms_topk_test", ">= 1")
        need(0 < self.rpn_positive_fraction <= 1, "rpn_positive_fraction", "in (0, 1]")
        need(
            self.rpn_negative_iou <= self.rpn_positive_iou,
            "rpn_negative_iou",
            f"<= rpn_positive_iou ({self.rpn_positive_iou})",
        )
        need(self.roi_batch_size_per_image >= 1, "roi_batch_size_per_image", ">= 1")
        need(0 < self.roi_fg_fraction <= 1, "roi_fg_fraction", "in (0, 1]")
        need(
            self.roi_bg_split is None
            or (len(self.roi_bg_split) == 2 and min(self.roi_bg_split) >= 0),
            "roi_bg_split",
            "None or two fractions >= 0",
        )
        need(0 < self.cls_mask_binarize_threshold < 1, "cls_mask_binarize_threshold", "in (0, 1)")
        need(self.bias_lr_mult > 0, "bias_lr_mult", "> 0")
        need(
            0 <= self.roi_bg_iou_low <= self.roi_bg_iou_high,
            "roi_bg_iou_low",
            f"in [0, roi_bg_iou_high ({self.roi_bg_iou_high})]",
        )
        need(self.roi_crop_size >= 1, "roi_crop_size", ">= 1")
        need(
            self.roi_pooled_size >= 1 and self.roi_crop_size % self.roi_pooled_size == 0,
            "roi_pooled_size",
            f"a divisor of roi_crop_size ({self.roi_crop_size})",
        )
        need(
            self.class_pool_size >= 1 and self.roi_pooled_size % self.class_pool_size == 0,
            "class_pool_size",
            f"a divisor of roi_pooled_size ({self.roi_pooled_size})",
        )
        need(self.mask_size >= 2, "mask_size", ">= 2")
        need(self.mask_fc_dim >= 1, "mask_fc_dim", ">= 1")
        need(self.fc_dim >= 1, "fc_dim", ">= 1")
        need(len(self.box_regression_weights) == 4, "box_regression_weights", "4 numbers")
        need(self.max_detections >= 1, "max_detections", ">= 1")
        need(0 <= self.predict_score_threshold <= 1, "predict_score_threshold", "in [0, 1]")
        need(self.mask_voting_max_candidates >= 1, "mask_voting_max_candidates", ">= 1")
        need(self.optimizer in _OPTIMIZERS, "optimizer", f"one of {_OPTIMIZERS}")
        need(self.learning_rate > 0, "learning_rate", "> 0")
        need(self.total_steps >= 1, "total_steps", ">= 1")
        need(0 <= self.lr_drop_fraction <= 1, "lr_drop_fraction", "in [0, 1]")
        need(self.warmup_steps >= 0, "warmup_steps", ">= 0")
        need(len(self.tiny_filters) >= 1, "tiny_filters", "a non-empty tuple")
        need(self.tiny_convs_per_stage >= 1, "tiny_convs_per_stage", ">= 1")

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def field_names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_keys(cls, keys):
        """Raise ``ValueError`` for the first key that is not a field (with a suggestion)."""
        names = cls.field_names()
        for key in keys:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.0)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"Unknown MNCConfig key {key!r}{hint}")

    def replace(self, **overrides) -> MNCConfig:
        """A copy with ``overrides`` applied (unknown keys raise ``ValueError``)."""
        self.check_keys(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists) suitable for JSON / YAML."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MNCConfig:
        data = dict(data or {})
        cls.check_keys(data)
        return cls(**data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text_or_path: str) -> MNCConfig:
        """Parse YAML text, or read it from a file path ending in .yaml/.yml."""
        text = text_or_path
        if text_or_path.endswith((".yaml", ".yml")) and "\n" not in text_or_path:
            with open(text_or_path) as f:
                text = f.read()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"MNCConfig YAML must be a mapping, got {type(data).__name__}")
        return cls.from_dict(data)

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny_shapes(cls, **overrides) -> MNCConfig:
        """Preset for ``MNC(num_classes, backbone="tiny")`` on ~128 px synthetic shapes on a CPU.

        Stride-8 features, anchors 16/32/64 px, small fc layers (256), 7×7 RoI features,
        fewer proposals and RoIs (half of them foreground), Adam with warm-up. Set
        ``total_steps`` to the planned number of steps (the learning rate drops ×0.1 for the
        last 20%). Further ``overrides`` are applied on top.
        """
        preset = dict(
            short_side=128,
            max_side=128,
            max_instances=8,
            feature_stride=8,
            tiny_filters=(32, 64, 96),
            tiny_convs_per_stage=2,
            tiny_out_channels=64,
            anchor_base_size=8.0,
            anchor_scales=(2.0, 4.0, 8.0),
            rpn_conv_filters=128,
            rpn_pre_nms_topk_train=1000,
            rpn_post_nms_topk_train=64,
            rpn_pre_nms_topk_test=1000,
            rpn_post_nms_topk_test=64,
            rpn_min_size=2.0,
            rpn_batch_size_per_image=128,
            rpn_allowed_border=-1.0,
            roi_batch_size_per_image=32,
            roi_fg_fraction=0.5,  # images hold 1–4 objects: more positives per step
            roi_crop_size=14,
            roi_pooled_size=7,
            class_pool_size=7,
            mask_size=28,
            mask_fc_dim=256,
            fc_dim=256,
            max_detections=100,
            mask_voting_max_candidates=16,
            optimizer="adam",
            learning_rate=1e-3,
            weight_decay=0.0,
            warmup_steps=100,
            total_steps=3000,
        )
        cls.check_keys(overrides)
        preset.update(overrides)
        return cls(**preset)
