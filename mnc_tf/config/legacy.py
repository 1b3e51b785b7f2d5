"""The flat ``MNCConfig`` names of mnc_tf 0.1 (``rpn_nms_iou``, ``short_side``, ...) and
their place in the config tree.

They are accepted as keyword aliases by ``MNCConfig(...)``, ``MNCConfig.replace``,
``MNCConfig.from_dict`` (so models saved before the tree load) and ``MNC(..., **overrides)``.
Experiment YAML files use the tree; a flat key there is an error naming its new place.
"""

from __future__ import annotations

import inspect

# The flat MNCConfig field names from before the tree → their place in it.
_LEGACY_SECTIONS = {
    "input": {
        "short_side": "short_side",
        "max_side": "max_side",
        "max_instances": "max_instances",
        "input_normalization": "normalization",
    },
    "backbone_options": {
        "backbone_weights": "weights",
        "freeze_early_layers": "freeze_early_layers",
        "feature_stride": "feature_stride",
        "tiny_filters": "tiny_filters",
        "tiny_convs_per_stage": "tiny_convs_per_stage",
        "tiny_out_channels": "tiny_out_channels",
    },
    "rpn": {
        "anchor_base_size": "anchor_base_size",
        "anchor_ratios": "anchor_ratios",
        "anchor_scales": "anchor_scales",
        **{
            f"rpn_{n}": n
            for n in (
                "conv_filters",
                "pre_nms_topk_train",
                "post_nms_topk_train",
                "pre_nms_topk_test",
                "post_nms_topk_test",
                "nms_iou",
                "min_size",
                "min_size_scaled",
                "min_size_before_topk",
                "batch_size_per_image",
                "positive_fraction",
                "positive_iou",
                "negative_iou",
                "allowed_border",
                "smooth_l1_beta",
                "mix_index",
            )
        },
    },
    "roi_sampling": {
        "roi_batch_size_per_image": "batch_size_per_image",
        "roi_fg_fraction": "fg_fraction",
        "roi_fg_iou": "fg_iou",
        "roi_bg_iou_high": "bg_iou_high",
        "roi_bg_iou_low": "bg_iou_low",
        "roi_bg_split": "bg_split",
        "add_gt_as_proposals": "add_gt_as_proposals",
    },
    "heads": {
        n: n
        for n in (
            "roi_crop_size",
            "roi_pooled_size",
            "class_pool_size",
            "mask_size",
            "mask_fc_dim",
            "mask_target_threshold",
            "fc_dim",
            "cls_mask_iou_threshold",
            "cls_mask_binarize_threshold",
            "det_classifier",
            "mask_pathway_grad_fg_only",
            "box_regression_weights",
            "box_smooth_l1_beta",
        )
    },
    "cascade": {
        n: n
        for n in ("box_gradient", "proposal_gradient_clip", "bridge_gradient_clip", "bridge_add_gt")
    },
    "loss_weights": {
        f"{n}_loss_weight": n for n in ("rpn_cls", "rpn_box", "mask", "cls", "det_cls", "box")
    },
    "postprocess": {
        "detection_nms_iou": "nms_iou",
        "max_detections": "max_detections",
        "detection_score_threshold": "score_threshold",
        "detection_pre_nms_topk": "pre_nms_topk",
        "mask_voting": "mask_voting",
        "mask_voting_iou": "mask_voting_iou",
        "mask_voting_max_candidates": "mask_voting_max_candidates",
        "mask_voting_rebox": "mask_voting_rebox",
        "mask_binarize_threshold": "mask_threshold",
        "predict_score_threshold": "predict_score_threshold",
    },
    "optimizer": {
        "optimizer": "name",
        **{
            n: n
            for n in (
                "learning_rate",
                "momentum",
                "weight_decay",
                "total_steps",
                "lr_drop_fraction",
                "lr_drop_factor",
                "warmup_steps",
                "clipnorm",
                "bias_lr_mult",
                "bias_weight_decay",
            )
        },
    },
}
LEGACY_KEYS = {
    old: f"{section}.{new}"
    for section, names in _LEGACY_SECTIONS.items()
    for old, new in names.items()
}


def accept_legacy_kwargs(cls):
    """Let ``cls(short_side=128, rpn_nms_iou=0.6)`` (pre-tree flat names) keep working."""
    init = cls.__init__
    fields = set(cls.field_names())

    def __init__(self, *args, **kwargs):
        legacy = {k: kwargs.pop(k) for k in list(kwargs) if k not in fields}
        init(self, *args, **kwargs)
        if legacy:
            updated = self.replace(**legacy)  # unknown keys raise here, with a suggestion
            for name in fields:
                object.__setattr__(self, name, getattr(updated, name))

    __init__.__doc__ = init.__doc__
    __init__.__signature__ = inspect.signature(init)
    cls.__init__ = __init__
    return cls
