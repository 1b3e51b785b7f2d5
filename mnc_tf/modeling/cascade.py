"""The cascade after stage 1, as data: a list of stage definitions run by one loop.

``num_stages = 3``: ``[mask(2), class(3)]``; ``5``: ``[mask(2), class(3), mask(4), class(5)]``
with stage 4 sharing stage 2's head and stage 5 sharing stage 3's (the paper's 5-stage
cascade); any odd ``num_stages`` ≥ 3 just lengthens the list. Each :class:`StageDef` holds
its head layer. A mask stage that follows a class stage runs on that class stage's regressed
boxes.

:meth:`Cascade.run` is the one loop (Detectron2's ``CascadeROIHeads`` shape): it runs every
stage and collects a :class:`StageOutput` per stage; :meth:`Cascade.losses` (training) or
:meth:`Cascade.instances` (inference) are computed from the collected outputs afterwards.
With targets (training) the loop also labels each stage's RoIs, because the labels steer the
forward pass: stage 4's RoIs are relabelled (:func:`mnc_tf.modeling.matching.label_rois`,
the RoI sampler's rule) and a class stage passes gradient to the mask head through the soft
masks of its mask-level foreground only.

Per stage the data flow is (shapes per image batch, ``R`` RoIs per image):

* mask stage: ``rois [B, R, 4]`` → RoI warp → ``[B·R, S, S, C]`` → mask head →
  ``mask logits [B, R, m, m]``;
* class stage: same warped features × soft masks → class head →
  ``class logits [B, R, N+1]``, ``box deltas [B, R, N+1, 4]``.
"""

import dataclasses
from typing import Any

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
      head: the head layer that computes it (a MaskHead or a ClassHead; the same object for
        stages 2, 4, ... and for 3, 5, ...).
      loss_suffix: appended to the stage's loss names (``""`` for stages 2–3, ``"_4"``...).
    """

    number: int
    kind: str
    head: Any
    loss_suffix: str


@dataclasses.dataclass
class StageOutput:
    """What one stage computed (tensors per image batch, ``R`` RoIs per image).

    ``rois``, ``valid``, ``mask_logits``: the RoIs the stage ran on and the mask head's
    logits on them (a class stage: those of the mask stage before it). ``box_labels``
    (training): :func:`mnc_tf.modeling.matching.label_rois` of these RoIs. Class stages also
    carry ``cls_logits``, ``box_deltas``, ``det_logits`` (training with ``det_classifier``)
    and ``cls_labels`` (training: the mask-level labels).
    """

    stage: StageDef
    rois: tf.Tensor
    valid: tf.Tensor
    mask_logits: tf.Tensor
    warped: tf.Tensor
    box_labels: dict | None = None
    cls_logits: tf.Tensor | None = None
    box_deltas: tf.Tensor | None = None
    det_logits: tf.Tensor | None = None
    cls_labels: tf.Tensor | None = None


def check_num_stages(num_stages):
    """Raise ValueError unless ``num_stages`` is an odd int ≥ 3."""
    if not isinstance(num_stages, int) or num_stages < 3 or num_stages % 2 == 0:
        raise ValueError(
            f"num_stages must be an odd int >= 3 (3 or 5 in the paper), got {num_stages!r}"
        )


def cascade_stages(num_stages, mask_head=None, class_head=None):
    """The stage list of an ``num_stages``-stage MNC (odd, ≥ 3; stage 1 is the RPN); mask
    stages hold ``mask_head``, class stages ``class_head``."""
    check_num_stages(num_stages)
    stages = []
    for number in range(2, num_stages + 1):
        kind = MASK if number % 2 == 0 else CLASS
        suffix = "" if number <= 3 else f"_{number}"
        stages.append(StageDef(number, kind, mask_head if kind == MASK else class_head, suffix))
    return stages


def loss_terms(stages, det_classifier=False):
    """``(loss name, term)`` of the cascade's losses, in stage order.

    The term keys the loss weight (:func:`mnc_tf.modeling.losses.loss_weights`); the name is
    the term's ``<term>_loss`` plus the stage's suffix (``mask_loss_4``, ``cls_loss_5``).
    ``det_cls``: the box-level classifier of ``MNCConfig.heads.det_classifier``.
    """
    terms = []
    for st in stages:
        kinds = ("mask",) if st.kind == MASK else ("cls", "det_cls", "box")
        for term in kinds:
            if term != "det_cls" or det_classifier:
                terms.append((f"{term}_loss{st.loss_suffix}", term))
    return terms


class Cascade:
    """Runs the stage list (each stage with its own :attr:`StageDef.head`).

    Args:
      stages: list of :class:`StageDef`.
      roi_warp: the RoI warp layer.
      config: :class:`mnc_tf.MNCConfig`.
      num_classes: N.
    """

    def __init__(self, stages, roi_warp, config, num_classes):
        self.stages = list(stages)
        self.roi_warp = roi_warp
        self.config = config
        self.num_classes = int(num_classes)

    # ------------------------------------------------------------------ the loop
    def run(self, features, image_size, rois, valid, training=False, targets=None):
        """Run every stage; one :class:`StageOutput` per stage.

        Args:
          features: ``[B, h, w, C]`` backbone features; image_size: float32 ``[B, 2]``.
          rois: float32 ``[B, R, 4]`` stage 2's RoIs (proposals, or the training sample);
          valid: bool ``[B, R]``.
          training: passed to the heads.
          targets: None (inference), or (training) a dict ``gt`` (``boxes [B, N, 4],
            labels [B, N], valid [B, N], masks [B, N, H, W]``), ``box_labels`` (stage 2's
            RoI labels: :func:`mnc_tf.modeling.stage2_mask.roi_sampler.sample_rois`' ``fg``,
            ``matched``, ``labels``) and ``grad_scale`` (scalar, d(differentiated
            loss)/d(one image's loss), for the gradient clamps).
        """
        cfg = self.config
        gt = None if targets is None else targets["gt"]
        box_labels = None if targets is None else targets["box_labels"]
        grad_scale = None if targets is None else targets["grad_scale"]
        batch = tf.shape(features)[0]
        outputs = []
        for st in self.stages:
            prev = outputs[-1] if outputs else None
            if st.kind == MASK:
                if prev is not None:
                    # Stage 4+: regress with the highest-scoring object class (released code).
                    pred = tf.cast(tf.argmax(prev.cls_logits[..., 1:], axis=-1), tf.int32) + 1
                    rois = self._refine(rois, prev.box_deltas, pred, valid, image_size, grad_scale)
                    if gt is not None:
                        if cfg.cascade.bridge_add_gt:
                            rois, valid = _append_gt(rois, valid, gt["boxes"], gt["valid"])
                        box_labels = matching.label_rois(
                            rois,
                            valid,
                            gt["boxes"],
                            gt["labels"],
                            gt["valid"],
                            cfg.roi_sampling.fg_iou,
                        )
                warped, mask_logits = self._mask_logits(features, rois, training, st.head)
                outputs.append(StageOutput(st, rois, valid, mask_logits, warped, box_labels))
            else:
                out = dataclasses.replace(prev, stage=st)
                grad_rows = None
                if gt is not None:
                    # Mask-level labels first: they decide which RoIs' soft masks pass gradient.
                    out.cls_labels = self._class_labels(out, gt)
                    if cfg.heads.mask_pathway_grad_fg_only:
                        grad_rows = out.cls_labels > 0
                det = gt is not None and cfg.heads.det_classifier
                logits = self._classify(
                    out.warped, out.mask_logits, batch, training, grad_rows, det, st.head
                )
                out.cls_logits, out.box_deltas = logits[0], logits[1]
                if det:
                    out.det_logits = logits[2]
                outputs.append(out)
        return outputs

    # ------------------------------------------------------------------ after the loop
    def losses(self, outputs, gt):
        """Per-image losses of the stages, dict loss name → float32 ``[B]`` (names and order
        of :func:`loss_terms`)."""
        cfg = self.config
        out = {}
        for o in outputs:
            st, lab = o.stage, o.box_labels
            if st.kind == MASK:
                targets = mask_targets(
                    gt["masks"],
                    o.rois,
                    lab["matched"],
                    cfg.heads.mask_size,
                    cfg.heads.mask_target_threshold,
                )
                out["mask_loss" + st.loss_suffix] = losses.mask_loss(
                    o.mask_logits, targets, lab["fg"]
                )
                continue
            box_t = class_targets.box_targets(
                o.rois, gt["boxes"], lab["matched"], cfg.heads.box_regression_weights
            )
            out["cls_loss" + st.loss_suffix] = losses.class_loss(
                o.cls_logits, o.cls_labels, o.valid
            )
            if o.det_logits is not None:
                out["det_cls_loss" + st.loss_suffix] = losses.class_loss(
                    o.det_logits, lab["labels"], o.valid
                )
            out["box_loss" + st.loss_suffix] = losses.box_loss(
                o.box_deltas, lab["labels"], box_t, lab["fg"], o.valid, cfg.heads.box_smooth_l1_beta
            )
        return out

    def instances(self, outputs):
        """Instances of every class stage, merged (the paper's 5-stage test-time merge).

        Returns:
          ``(boxes [B, J, 4], mask_probs [B, J, m, m], class_probs [B, J, N+1], valid [B, J])``
          with ``J = R · (number of class stages)``.
        """
        classified = [o for o in outputs if o.stage.kind == CLASS]
        boxes = tf.concat([o.rois for o in classified], axis=1)
        masks = tf.concat([tf.sigmoid(o.mask_logits) for o in classified], axis=1)
        probs = tf.concat([tf.nn.softmax(o.cls_logits) for o in classified], axis=1)
        valid = tf.concat([o.valid for o in classified], axis=1)
        return boxes, masks, probs, valid

    def train(self, features, image_size, sample, gt, grad_scale, training=True):
        """Losses of all stages after the RPN: :meth:`run` on the RoI ``sample``
        (:func:`mnc_tf.modeling.stage2_mask.roi_sampler.sample_rois`), then :meth:`losses`."""
        targets = {"gt": gt, "box_labels": sample, "grad_scale": grad_scale}
        outputs = self.run(features, image_size, sample["rois"], sample["valid"], training, targets)
        return self.losses(outputs, gt)

    def infer(self, features, image_size, proposals, valid, training=False):
        """Merged instances (:meth:`instances`) of :meth:`run` on the ``proposals``
        (float32 ``[B, P, 4]``, valid: bool ``[B, P]``)."""
        return self.instances(self.run(features, image_size, proposals, valid, training))

    # ------------------------------------------------------------------ one stage's pieces
    def _boxes(self, rois):
        return rois if self.config.cascade.box_gradient else tf.stop_gradient(rois)

    def _head(self, head, kind):
        """``head``, or (None) the first ``kind`` stage's."""
        if head is not None:
            return head
        return next(st.head for st in self.stages if st.kind == kind)

    def _mask_logits(self, features, rois, training, head=None):
        """``rois [B, R, 4]`` → ``(warped [B·R, S, S, C], logits [B, R, m, m])`` with the mask
        ``head`` (default: stage 2's)."""
        warped = warp_rois(self.roi_warp, features, self._boxes(rois))
        logits = self._head(head, MASK)(warped, training=training)
        m = self.config.heads.mask_size
        return warped, tf.reshape(logits, tf.stack([tf.shape(rois)[0], -1, m, m]))

    def _classify(self, warped, mask_logits, batch, training, grad_rows=None, det=False, head=None):
        """Class ``head`` (default: stage 3's) on the warped features and the soft masks.

        ``grad_rows`` (bool ``[B, R]``, training): the class losses reach the mask head
        through the soft masks of these RoIs only (released ``MaskLayer.backward``).
        ``det``: also return the box-level classifier's logits ``[B, R, N+1]``.
        """
        m = self.config.heads.mask_size
        probs = tf.sigmoid(tf.reshape(mask_logits, [-1, m, m]))
        if grad_rows is not None:
            rows = tf.reshape(grad_rows, [-1])[:, None, None]
            probs = tf.where(rows, probs, tf.stop_gradient(probs))
        outs = self._head(head, CLASS)(warped, probs, training=training, return_det=det)
        n1 = self.num_classes + 1
        shaped = [
            tf.reshape(outs[0], tf.stack([batch, -1, n1])),
            tf.reshape(outs[1], tf.stack([batch, -1, n1, 4])),
        ]
        if det:
            shaped.append(tf.reshape(outs[2], tf.stack([batch, -1, n1])))
        return tuple(shaped)

    def _class_labels(self, out, gt):
        """Mask-level labels of a class stage's RoIs (training)."""
        cfg = self.config
        lab = out.box_labels
        mask_iou = None
        if cfg.heads.cls_mask_iou_threshold > 0:
            mask_iou = class_targets.mask_overlap(
                tf.sigmoid(out.mask_logits),
                out.rois,
                gt["masks"],
                lab["matched"],
                cfg.heads.cls_mask_binarize_threshold,
            )
        return class_targets.class_labels(
            lab["labels"], lab["fg"], mask_iou, cfg.heads.cls_mask_iou_threshold
        )

    def _refine(self, rois, deltas, classes, valid, image_size, grad_scale=None):
        """Apply each RoI's class-``classes`` deltas: the next mask stage's boxes.

        ``grad_scale`` (training): see :func:`mnc_tf.modeling.gradients.clip_gradient`.
        """
        d = tf.gather(deltas, classes, batch_dims=2)  # [B, R, 4]
        if grad_scale is not None:
            d = clip_gradient(d, self.config.cascade.bridge_gradient_clip, grad_scale)
        refined = box_ops.decode(d, rois, self.config.heads.box_regression_weights)
        refined = box_ops.clip(refined, image_size)
        return tf.where(valid[..., None], refined, 0.0)


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
