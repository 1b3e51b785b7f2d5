"""The cascade after stage 1, as data: a list of stage definitions run by one loop.

``num_stages = 3``: ``[mask(2), class(3)]``; ``5``: ``[mask(2), class(3), mask(4), class(5)]``
with stage 4 sharing stage 2's head and stage 5 sharing stage 3's (the paper's 5-stage
cascade); any odd ``num_stages`` ≥ 3 just lengthens the list. A mask stage that follows a
class stage runs on that class stage's regressed boxes.

Per stage the data flow is (shapes per image batch, ``R`` RoIs per image):

* mask stage: ``rois [B, R, 4]`` → RoI warp → ``[B·R, S, S, C]`` → mask head →
  ``mask logits [B, R, m, m]``;
* class stage: same warped features × soft masks → class head →
  ``class logits [B, R, N+1]``, ``box deltas [B, R, N+1, 4]``.
"""

import dataclasses

import tensorflow as tf

from mnc_tf.core import box_ops
from mnc_tf.modeling import losses, matching
from mnc_tf.modeling.gradients import clip_gradient
from mnc_tf.modeling.stage2_mask.mask_targets import mask_targets
from mnc_tf.modeling.stage2_mask.roi_features import warp_rois
from mnc_tf.modeling.stage3_class import class_targets

MASK = "mask"
CLASS = "class"


@dataclasses.dataclass(frozen=True)
class StageDef:
    """One stage after the RPN.

    Attributes:
      number: the paper's stage number (2, 3, 4, ...).
      kind: ``"mask"`` or ``"class"``.
      head: name of the (shared) head layer that computes it.
      loss_suffix: appended to the stage's loss names (``""`` for stages 2–3, ``"_4"``...).
    """

    number: int
    kind: str
    head: str
    loss_suffix: str


def cascade_stages(num_stages):
    """The stage list of an ``num_stages``-stage MNC (odd, ≥ 3; stage 1 is the RPN)."""
    if not isinstance(num_stages, int) or num_stages < 3 or num_stages % 2 == 0:
        raise ValueError(
            f"num_stages must be an odd int >= 3 (3 or 5 in the paper), got {num_stages!r}"
        )
    stages = []
    for number in range(2, num_stages + 1):
        kind = MASK if number % 2 == 0 else CLASS
        suffix = "" if number <= 3 else f"_{number}"
        stages.append(StageDef(number, kind, f"{kind}_head", suffix))
    return stages


def loss_names(stages, det_classifier=False):
    """Names of the cascade's loss terms, in stage order (``det_cls_loss*``: the box-level
    classifier of ``MNCConfig.det_classifier``)."""
    names = []
    for st in stages:
        if st.kind == MASK:
            names.append("mask_loss" + st.loss_suffix)
        else:
            names.append("cls_loss" + st.loss_suffix)
            if det_classifier:
                names.append("det_cls_loss" + st.loss_suffix)
            names.append("box_loss" + st.loss_suffix)
    return names


class Cascade:
    """Runs the stage list with the given heads (weights are shared by head name).

    Args:
      stages: list of :class:`StageDef`.
      heads: dict head name → layer (``"mask_head"`` → MaskHead, ``"class_head"`` → ClassHead).
      roi_warp: the RoI warp layer.
      config: :class:`mnc_tf.MNCConfig`.
      num_classes: N.
    """

    def __init__(self, stages, heads, roi_warp, config, num_classes):
        self.stages = list(stages)
        self.heads = heads
        self.roi_warp = roi_warp
        self.config = config
        self.num_classes = int(num_classes)

    # ------------------------------------------------------------------ shared pieces
    def _boxes(self, rois):
        return rois if self.config.box_gradient else tf.stop_gradient(rois)

    def _mask_logits(self, features, rois, training):
        """``rois [B, R, 4]`` → ``(warped [B·R, S, S, C], logits [B, R, m, m])``."""
        warped = warp_rois(self.roi_warp, features, self._boxes(rois))
        logits = self.heads["mask_head"](warped, training=training)
        m = self.config.mask_size
        return warped, tf.reshape(logits, tf.stack([tf.shape(rois)[0], -1, m, m]))

    def _classify(self, warped, mask_logits, batch, training, grad_rows=None, det=False):
        """Class head on the warped features and the soft masks.

        ``grad_rows`` (bool ``[B, R]``, training): the class losses reach the mask head
        through the soft masks of these RoIs only (released ``MaskLayer.backward``).
        ``det``: also return the box-level classifier's logits ``[B, R, N+1]``.
        """
        m = self.config.mask_size
        probs = tf.sigmoid(tf.reshape(mask_logits, [-1, m, m]))
        if grad_rows is not None:
            rows = tf.reshape(grad_rows, [-1])[:, None, None]
            probs = tf.where(rows, probs, tf.stop_gradient(probs))
        outs = self.heads["class_head"](warped, probs, training=training, return_det=det)
        n1 = self.num_classes + 1
        shaped = [
            tf.reshape(outs[0], tf.stack([batch, -1, n1])),
            tf.reshape(outs[1], tf.stack([batch, -1, n1, 4])),
        ]
        if det:
            shaped.append(tf.reshape(outs[2], tf.stack([batch, -1, n1])))
        return tuple(shaped)

    def _refine(self, rois, deltas, classes, valid, image_size, grad_scale=None):
        """Apply each RoI's class-``classes`` deltas: the next mask stage's boxes.

        ``grad_scale`` (training): see :func:`mnc_tf.modeling.gradients.clip_gradient`.
        """
        d = tf.gather(deltas, classes, batch_dims=2)  # [B, R, 4]
        if grad_scale is not None:
            d = clip_gradient(d, self.config.bridge_gradient_clip, grad_scale)
        refined = box_ops.decode(d, rois, self.config.box_regression_weights)
        refined = box_ops.clip(refined, image_size)
        return tf.where(valid[..., None], refined, 0.0)

    # ------------------------------------------------------------------ training
    def train(self, features, image_size, sample, gt, grad_scale, training=True):
        """Losses of all stages after the RPN.

        Args:
          features: ``[B, h, w, C]`` backbone features.
          image_size: float32 ``[B, 2]``.
          sample: :func:`mnc_tf.modeling.stage2_mask.roi_sampler.sample_rois` output.
          gt: dict ``boxes [B, N, 4], labels [B, N], valid [B, N], masks [B, N, H, W]``.
          grad_scale: scalar, d(differentiated loss)/d(one image's loss) (gradient clamps).

        Returns:
          dict loss name → float32 ``[B]`` per-image losses (see :func:`loss_names`).
        """
        cfg = self.config
        batch = tf.shape(features)[0]
        rois, valid = sample["rois"], sample["valid"]
        fg, matched, labels = sample["fg"], sample["matched"], sample["labels"]
        out = {}
        warped = mask_logits = None
        class_out = None
        for st in self.stages:
            if st.kind == MASK:
                if class_out is not None:
                    # Stage 4+: regress with the highest-scoring object class (released code).
                    cls_logits, deltas = class_out
                    pred = tf.cast(tf.argmax(cls_logits[..., 1:], axis=-1), tf.int32) + 1
                    rois = self._refine(rois, deltas, pred, valid, image_size, grad_scale)
                    if cfg.bridge_add_gt:
                        rois, valid = _append_gt(rois, valid, gt["boxes"], gt["valid"])
                    max_iou, matched, _ = matching.match_to_gt(rois, gt["boxes"], gt["valid"])
                    fg = valid & (max_iou >= cfg.roi_fg_iou)
                    labels = tf.where(fg, tf.gather(gt["labels"], matched, batch_dims=1), 0)
                warped, mask_logits = self._mask_logits(features, rois, training)
                targets = mask_targets(
                    gt["masks"], rois, matched, cfg.mask_size, cfg.mask_target_threshold
                )
                out["mask_loss" + st.loss_suffix] = losses.mask_loss(mask_logits, targets, fg)
            else:
                # Mask-level labels first: they decide which RoIs' soft masks pass gradient.
                mask_iou = None
                if cfg.cls_mask_iou_threshold > 0:
                    mask_iou = class_targets.mask_overlap(
                        tf.sigmoid(mask_logits),
                        rois,
                        gt["masks"],
                        matched,
                        cfg.cls_mask_binarize_threshold,
                    )
                cls_labels = class_targets.class_labels(
                    labels, fg, mask_iou, cfg.cls_mask_iou_threshold
                )
                grad_rows = (cls_labels > 0) if cfg.mask_pathway_grad_fg_only else None
                outs = self._classify(
                    warped, mask_logits, batch, training, grad_rows, cfg.det_classifier
                )
                cls_logits, deltas = outs[0], outs[1]
                box_t = class_targets.box_targets(
                    rois, gt["boxes"], matched, cfg.box_regression_weights
                )
                out["cls_loss" + st.loss_suffix] = losses.class_loss(cls_logits, cls_labels, valid)
                if cfg.det_classifier:
                    out["det_cls_loss" + st.loss_suffix] = losses.class_loss(outs[2], labels, valid)
                out["box_loss" + st.loss_suffix] = losses.box_loss(
                    deltas, labels, box_t, fg, valid, cfg.box_smooth_l1_beta
                )
                class_out = (cls_logits, deltas)
        return out

    # ------------------------------------------------------------------ inference
    def infer(self, features, image_size, proposals, valid, training=False):
        """Instances of every class stage, merged (the paper's 5-stage test-time merge).

        Args:
          features: ``[B, h, w, C]``; image_size: float32 ``[B, 2]``.
          proposals: float32 ``[B, P, 4]``; valid: bool ``[B, P]``.

        Returns:
          ``(boxes [B, J, 4], mask_probs [B, J, m, m], class_probs [B, J, N+1], valid [B, J])``
          with ``J = P · (number of class stages)``.
        """
        batch = tf.shape(features)[0]
        rois = proposals
        collected = []
        warped = mask_logits = None
        class_out = None
        for st in self.stages:
            if st.kind == MASK:
                if class_out is not None:
                    cls_logits, deltas = class_out
                    pred = tf.cast(tf.argmax(cls_logits[..., 1:], axis=-1), tf.int32) + 1
                    rois = self._refine(rois, deltas, pred, valid, image_size)
                warped, mask_logits = self._mask_logits(features, rois, training)
            else:
                cls_logits, deltas = self._classify(warped, mask_logits, batch, training)
                class_out = (cls_logits, deltas)
                collected.append((rois, tf.sigmoid(mask_logits), tf.nn.softmax(cls_logits)))
        boxes = tf.concat([c[0] for c in collected], axis=1)
        masks = tf.concat([c[1] for c in collected], axis=1)
        probs = tf.concat([c[2] for c in collected], axis=1)
        valid_all = tf.concat([valid] * len(collected), axis=1)
        return boxes, masks, probs, valid_all


def _append_gt(rois, valid, gt_boxes, gt_valid):
    """Append each image's GT boxes to its RoIs (the released stage bridge's training input).

    Only as many GT columns as the most populated image of the batch has are appended (valid
    rows first), so the padding of ``max_instances`` costs nothing downstream.

    Returns:
      ``(rois [B, R + n, 4], valid [B, R + n])``.
    """
    order = tf.argsort(tf.cast(~gt_valid, tf.int32), axis=1, stable=True)
    n = tf.reduce_max(tf.reduce_sum(tf.cast(gt_valid, tf.int32), axis=1))
    order = order[:, :n]
    boxes = tf.gather(tf.cast(gt_boxes, rois.dtype), order, batch_dims=1)
    ok = tf.gather(gt_valid, order, batch_dims=1)
    boxes = tf.where(ok[..., None], boxes, 0.0)
    return tf.concat([rois, boxes], axis=1), tf.concat([valid, ok], axis=1)
