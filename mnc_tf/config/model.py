"""`MNCConfig`: the hyper-parameters of the MNC model as a tree of typed sections.

Defaults are the paper's (Dai, He, Sun, CVPR 2016) and its released code's, see
``DESIGN.md`` §1. The sections follow the paper's Figure 2 and are what each component
takes::

    MNCConfig
    ├── input             image sizes and pixel normalisation   → mnc_tf.preprocessing
    ├── backbone_options  weights, stride, the tiny net          → modeling/backbones
    ├── rpn               anchors, proposals, anchor sampling   → stage 1
    ├── roi_sampling      RoIs for stages 2-5 in training        → stage 2/4 targets
    ├── heads             RoI warp sizes, mask and class heads   → stages 2-5
    ├── cascade           end-to-end gradients, stage bridge     → the cascade loop
    ├── loss_weights      one weight per loss term
    ├── postprocess       NMS, mask voting, thresholds           → detections
    ├── optimizer         what MNC.compile() builds when given none
    ├── deterministic_sampling, sampling_seed

Override per field: ``MNCConfig().replace(**{"rpn.nms_iou": 0.6})``,
``MNCConfig(rpn=RPNConfig(nms_iou=0.6))``, from a dict / YAML (``MNCConfig.from_yaml``), or
through ``MNC(..., rpn_nms_iou=0.6)``. The pre-tree flat names (``rpn_nms_iou``,
``short_side``, ``learning_rate``, ...) are accepted as keyword aliases (``LEGACY_KEYS``), so
code and saved models from before the tree keep working; YAML experiment files use the tree.

Things that are *not* here because they are arguments of :class:`mnc_tf.MNC`:
``num_classes``, ``backbone`` and ``num_stages``.
"""

from __future__ import annotations

import dataclasses

from mnc_tf.config.base import ConfigNode
from mnc_tf.config.legacy import LEGACY_KEYS, accept_legacy_kwargs

NORMALIZATIONS = (None, "caffe", "scale", "none")
OPTIMIZERS = ("sgd", "adam", "adamw")
# The RoI warp op's largest max-pool window (custom_ops/roi_warp/roi_warp_math.h).
MAX_POOL_WINDOW = 16


def check_crop_pool_sizes(crop_size, pooled_size, class_pool_size=None, where="heads"):
    """The one check of the RoI feature sizes: pooled divides crop (window ≤ 16), class pool
    divides pooled.

    Raises ``ValueError`` naming the offending size (``where`` prefixes the names).
    """
    for name, value in (("roi_crop_size", crop_size), ("roi_pooled_size", pooled_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}.{name} must be an int >= 1, got {value!r}")
    if crop_size % pooled_size:
        raise ValueError(
            f"{where}.roi_pooled_size must be a divisor of roi_crop_size ({crop_size}), "
            f"got {pooled_size!r}"
        )
    if crop_size // pooled_size > MAX_POOL_WINDOW:
        raise ValueError(
            f"{where}.roi_crop_size / roi_pooled_size must be <= {MAX_POOL_WINDOW} (the RoI warp "
            f"op's max-pool window), got {crop_size} / {pooled_size}"
        )
    if class_pool_size is not None and (class_pool_size < 1 or pooled_size % class_pool_size):
        raise ValueError(
            f"{where}.class_pool_size must be a divisor of roi_pooled_size ({pooled_size}), "
            f"got {class_pool_size!r}"
        )


@dataclasses.dataclass
class InputConfig(ConfigNode):
    """Image sizes (DESIGN.md §4) and the pixel normalisation, in input-image pixels."""

    short_side: int = 600  # resized shorter image side
    max_side: int = 1000  # cap on the resized longer side
    max_instances: int = 100  # padded number of ground-truth instances per image
    # Pixel normalisation applied by the model to 0..255 RGB input: "caffe" (RGB→BGR minus the
    # ImageNet means, as keras.applications VGG/ResNet expect), "scale" (x/127.5 - 1) or
    # "none". None picks the backbone's own: caffe for vgg16/resnet*, scale for tiny, none for
    # a user model.
    normalization: str | None = None

    def validate(self, path="MNCConfig.input"):
        self._need(self.short_side > 0, "short_side", "> 0", path)
        self._need(
            self.max_side >= self.short_side, "max_side", f">= short_side ({self.short_side})", path
        )
        self._need(self.max_instances >= 1, "max_instances", ">= 1", path)
        self._need(
            self.normalization in NORMALIZATIONS, "normalization", f"one of {NORMALIZATIONS}", path
        )


@dataclasses.dataclass
class BackboneConfig(ConfigNode):
    """Backbone options (the backbone itself is ``MNC(backbone=...)``)."""

    # None (random init), "imagenet" (keras.applications' download-and-cache; for vgg16 the
    # file with the fc layers, so the class stage's fc6/fc7 start from ImageNet as in the
    # released model) or a local .h5 / .weights.h5 file.
    weights: str | None = None
    freeze_early_layers: bool = True  # vgg conv1–2 / resnet stem+conv2 frozen (paper)
    # Stride of the feature map. None: 16 for vgg16/resnet/tiny, the user model's
    # ``feature_stride`` attribute otherwise. "tiny" accepts 4, 8, 16 or 32.
    feature_stride: int | None = None
    tiny_filters: tuple = (32, 64, 128, 256, 256)  # channels of tiny's stages (one per ×2)
    tiny_convs_per_stage: int = 2
    tiny_out_channels: int | None = None  # 1×1 projection of tiny's output (None: none)

    def validate(self, path="MNCConfig.backbone_options"):
        self._need(
            self.feature_stride is None or self.feature_stride > 0, "feature_stride", "> 0", path
        )
        self._need(len(self.tiny_filters) >= 1, "tiny_filters", "a non-empty tuple", path)
        self._need(self.tiny_convs_per_stage >= 1, "tiny_convs_per_stage", ">= 1", path)


@dataclasses.dataclass
class RPNConfig(ConfigNode):
    """Stage 1: anchors, the RPN head, proposals and the anchor sampler."""

    anchor_base_size: float = 16.0
    anchor_ratios: tuple = (0.5, 1.0, 2.0)  # h / w
    anchor_scales: tuple = (8.0, 16.0, 32.0)  # anchor side = base_size · scale
    conv_filters: int = 512
    pre_nms_topk_train: int = 12000
    post_nms_topk_train: int = 300
    pre_nms_topk_test: int = 6000
    post_nms_topk_test: int = 300
    nms_iou: float = 0.7
    # Proposals with a side below min_size are dropped. Released code: the size is in
    # *original* image pixels (multiplied by the image scale, image_info row 2) and the filter
    # runs before the pre-NMS top-k. False / False: input pixels, after the top-k.
    min_size: float = 16.0
    min_size_scaled: bool = True
    min_size_before_topk: bool = True
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    positive_iou: float = 0.7
    negative_iou: float = 0.3
    # Anchors reaching further than this outside the image are ignored in training
    # (Faster R-CNN uses 0); negative keeps every anchor.
    allowed_border: float = 0.0
    smooth_l1_beta: float = 1.0 / 9.0  # sigma = 3 in the Caffe code
    # Released MIX_INDEX: after the 256-anchor sample, the anchor behind every sampled
    # stage-2 RoI that came from a proposal is labelled 1 (RoI foreground) or 0 (background).
    mix_index: bool = True

    def validate(self, path="MNCConfig.rpn"):
        need = self._need
        need(
            len(self.anchor_ratios) >= 1 and min(self.anchor_ratios) > 0,
            "anchor_ratios",
            "a non-empty tuple of positive numbers",
            path,
        )
        need(
            len(self.anchor_scales) >= 1 and min(self.anchor_scales) > 0,
            "anchor_scales",
            "a non-empty tuple of positive numbers",
            path,
        )
        need(self.anchor_base_size > 0, "anchor_base_size", "> 0", path)
        need(0 < self.nms_iou <= 1, "nms_iou", "in (0, 1]", path)
        for name in (
            "post_nms_topk_train",
            "post_nms_topk_test",
            "pre_nms_topk_train",
            "pre_nms_topk_test",
        ):
            need(getattr(self, name) >= 1, name, ">= 1", path)
        need(0 < self.positive_fraction <= 1, "positive_fraction", "in (0, 1]", path)
        need(
            self.negative_iou <= self.positive_iou,
            "negative_iou",
            f"<= positive_iou ({self.positive_iou})",
            path,
        )


@dataclasses.dataclass
class ROISamplingConfig(ConfigNode):
    """The RoIs stages 2-5 train on (per image) and how they are labelled."""

    batch_size_per_image: int = 64
    fg_fraction: float = 0.3  # released code (paper: ~25%)
    fg_iou: float = 0.5
    bg_iou_high: float = 0.5
    bg_iou_low: float = 0.1
    # Shares of the background slots (R - #fg) drawn from IoU [low, high) and [0, low), each
    # rounded and capped by what is available, as the released layer (0.85, 0.15). None:
    # [low, high) first, [0, low) fills whatever is missing.
    bg_split: tuple | None = (0.85, 0.15)
    add_gt_as_proposals: bool = True

    def validate(self, path="MNCConfig.roi_sampling"):
        need = self._need
        need(self.batch_size_per_image >= 1, "batch_size_per_image", ">= 1", path)
        need(0 < self.fg_fraction <= 1, "fg_fraction", "in (0, 1]", path)
        need(
            self.bg_split is None or (len(self.bg_split) == 2 and min(self.bg_split) >= 0),
            "bg_split",
            "None or two fractions >= 0",
            path,
        )
        need(
            0 <= self.bg_iou_low <= self.bg_iou_high,
            "bg_iou_low",
            f"in [0, bg_iou_high ({self.bg_iou_high})]",
            path,
        )


@dataclasses.dataclass
class HeadsConfig(ConfigNode):
    """Stages 2-5: RoI warp sizes, the mask head (stages 2/4), the class head (3/5)."""

    roi_crop_size: int = 28  # RoI warp output before the 2×2 max-pool
    roi_pooled_size: int = 14  # after the max-pool
    class_pool_size: int = 7  # class pathways max-pool the warped features to this size
    mask_size: int = 28  # m (released code: 21)
    mask_fc_dim: int = 256
    mask_target_threshold: float = 0.5  # binarisation of the cropped GT mask
    fc_dim: int = 4096  # width of the two fc layers of each class pathway
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

    def validate(self, path="MNCConfig.heads"):
        need = self._need
        check_crop_pool_sizes(
            self.roi_crop_size, self.roi_pooled_size, self.class_pool_size, where=path
        )
        need(
            0 < self.cls_mask_binarize_threshold < 1,
            "cls_mask_binarize_threshold",
            "in (0, 1)",
            path,
        )
        need(self.mask_size >= 2, "mask_size", ">= 2", path)
        need(self.mask_fc_dim >= 1, "mask_fc_dim", ">= 1", path)
        need(self.fc_dim >= 1, "fc_dim", ">= 1", path)
        need(len(self.box_regression_weights) == 4, "box_regression_weights", "4 numbers", path)


@dataclasses.dataclass
class CascadeConfig(ConfigNode):
    """End-to-end training of the cascade (what crosses from one stage into the next)."""

    box_gradient: bool = True  # losses back-propagate through the RoI coordinates
    # Per-image, per-element clamps of the gradient that stage-2+ losses send into the
    # regression outputs (released prototxt: clip_base 512 for both the proposal layer and
    # the stage bridge; None: off).
    proposal_gradient_clip: float | None = 1.0 / 512
    bridge_gradient_clip: float | None = 1.0 / 512
    # Released stage bridge (training): the GT boxes join the regressed RoIs of stages 4/5.
    bridge_add_gt: bool = True


@dataclasses.dataclass
class LossWeights(ConfigNode):
    """One weight per loss term; stages 4/5 reuse the weights of stages 2/3."""

    rpn_cls: float = 1.0
    rpn_box: float = 1.0
    mask: float = 2.0  # released prototxt: loss_weight 2 (stages 2 and 4)
    cls: float = 1.0
    det_cls: float = 1.0
    box: float = 1.0


@dataclasses.dataclass
class PostprocessConfig(ConfigNode):
    """Inference: class NMS, mask voting, the mask and drawing thresholds."""

    nms_iou: float = 0.3  # per-class NMS
    max_detections: int = 100
    score_threshold: float = 0.0
    pre_nms_topk: int = 4000  # (instance, class) pairs entering the class NMS
    mask_voting: bool = True
    mask_voting_iou: float = 0.5
    # Voting averages the best-scoring this-many same-class candidates with box IoU ≥ 0.5
    # (bounds memory: K · this · m² floats per image).
    mask_voting_max_candidates: int = 32
    # Released tester: each voted instance is re-boxed to the tight box of its voted mask
    # (pixels > mask_threshold). False: the voted mask stays in the kept box.
    mask_voting_rebox: bool = True
    # Soft masks are binarised at this value (voting's re-boxing, evaluation, export,
    # drawing): every consumer reads it from the model or the export, never a literal.
    mask_threshold: float = 0.4
    # Score threshold of the detections the tools draw and write (mnc-predict, Predictor,
    # visualize.draw_instances); evaluation scores every detection.
    predict_score_threshold: float = 0.5

    def validate(self, path="MNCConfig.postprocess"):
        need = self._need
        need(0 < self.nms_iou <= 1, "nms_iou", "in (0, 1]", path)
        need(self.max_detections >= 1, "max_detections", ">= 1", path)
        need(0 <= self.predict_score_threshold <= 1, "predict_score_threshold", "in [0, 1]", path)
        need(self.mask_voting_max_candidates >= 1, "mask_voting_max_candidates", ">= 1", path)


@dataclasses.dataclass
class OptimizerConfig(ConfigNode):
    """What ``MNC.compile()`` builds when given no optimizer (``mnc_tf.modeling.optim``)."""

    name: str = "sgd"  # "sgd", "adam" or "adamw"
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

    def validate(self, path="MNCConfig.optimizer"):
        need = self._need
        need(self.name in OPTIMIZERS, "name", f"one of {OPTIMIZERS}", path)
        need(self.learning_rate > 0, "learning_rate", "> 0", path)
        need(self.total_steps >= 1, "total_steps", ">= 1", path)
        need(0 <= self.lr_drop_fraction <= 1, "lr_drop_fraction", "in [0, 1]", path)
        need(self.warmup_steps >= 0, "warmup_steps", ">= 0", path)
        need(self.bias_lr_mult > 0, "bias_lr_mult", "> 0", path)


def _section(cls):
    return dataclasses.field(default_factory=cls)


@dataclasses.dataclass
class MNCConfig(ConfigNode):
    """Hyper-parameters of MNC (paper defaults), one typed section per component."""

    _aliases = LEGACY_KEYS

    input: InputConfig = _section(InputConfig)
    backbone_options: BackboneConfig = _section(BackboneConfig)
    rpn: RPNConfig = _section(RPNConfig)
    roi_sampling: ROISamplingConfig = _section(ROISamplingConfig)
    heads: HeadsConfig = _section(HeadsConfig)
    cascade: CascadeConfig = _section(CascadeConfig)
    loss_weights: LossWeights = _section(LossWeights)
    postprocess: PostprocessConfig = _section(PostprocessConfig)
    optimizer: OptimizerConfig = _section(OptimizerConfig)
    # True: anchor/RoI samplers draw from stateless RNGs seeded by (sampling_seed, step,
    # image_id or a fingerprint of the image's targets), so a run is reproducible and
    # independent of how a global batch is split across replicas.
    deterministic_sampling: bool = False
    sampling_seed: int = 0

    def validate(self):
        """Each section's checks (with its path in the messages)."""
        for name, typ in self.field_types().items():
            value = getattr(self, name)
            if isinstance(typ, type) and issubclass(typ, ConfigNode):
                if not isinstance(value, typ):
                    raise ValueError(
                        f"MNCConfig.{name} must be a {typ.__name__} or a mapping, got {value!r}"
                    )
                value.validate()

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny_shapes(cls, **overrides) -> MNCConfig:
        """Preset for ``MNC(num_classes, backbone="tiny")`` on ~128 px synthetic shapes on a CPU.

        Stride-8 features, anchors 16/32/64 px, small fc layers (256), 7×7 RoI features,
        fewer proposals and RoIs (half of them foreground), Adam with warm-up. Set
        ``optimizer.total_steps`` to the planned number of steps (the learning rate drops ×0.1
        for the last 20%). Further ``overrides`` (``replace``'s keys) are applied on top.
        """
        preset = cls.from_dict(
            {
                "input": {"short_side": 128, "max_side": 128, "max_instances": 8},
                "backbone_options": {
                    "feature_stride": 8,
                    "tiny_filters": (32, 64, 96),
                    "tiny_convs_per_stage": 2,
                    "tiny_out_channels": 64,
                },
                "rpn": {
                    "anchor_base_size": 8.0,
                    "anchor_scales": (2.0, 4.0, 8.0),
                    "conv_filters": 128,
                    "pre_nms_topk_train": 1000,
                    "post_nms_topk_train": 64,
                    "pre_nms_topk_test": 1000,
                    "post_nms_topk_test": 64,
                    "min_size": 2.0,
                    "batch_size_per_image": 128,
                    "allowed_border": -1.0,
                },
                # images hold 1–4 objects: more positives per step
                "roi_sampling": {"batch_size_per_image": 32, "fg_fraction": 0.5},
                "heads": {
                    "roi_crop_size": 14,
                    "roi_pooled_size": 7,
                    "class_pool_size": 7,
                    "mask_size": 28,
                    "mask_fc_dim": 256,
                    "fc_dim": 256,
                },
                "postprocess": {"max_detections": 100, "mask_voting_max_candidates": 16},
                "optimizer": {
                    "name": "adam",
                    "learning_rate": 1e-3,
                    "weight_decay": 0.0,
                    "warmup_steps": 100,
                    "total_steps": 3000,
                },
            },
            strict=False,
        )
        return preset.replace(**overrides) if overrides else preset


accept_legacy_kwargs(MNCConfig)
