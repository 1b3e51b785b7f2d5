"""NumPy transcriptions of the released MNC code (GitHub daijifeng001/MNC, Python 2 + Caffe).

Written from reading ``lib/transform/mask_transform.py``, ``lib/pylayer/mask_layer.py``,
``lib/pylayer/proposal_target_layer.py``, ``lib/pylayer/stage_bridge_layer.py``,
``lib/transform/bbox_transform.py`` and ``lib/nms/mv_kernel.cu`` (the GPU mask voting the
tester uses by default), keeping their conventions: boxes ``(x1, y1, x2, y2)`` with
*inclusive* pixel indices (width ``x2 - x1 + 1``), masks ``[rows, cols]``. They are the
independent references of ``tests/modeling/test_released_parity.py``; nothing here imports
mnc_tf.

Our convention (``[y1, x1, y2, x2)``, pixel edges) maps an inclusive released box
``(x1, y1, x2, y2)`` to ``[y1, x1, y2 + 1, x2 + 1]`` (:func:`to_ours`).
"""

import cv2
import numpy as np

BINARIZE_THRESH = 0.4  # cfg.BINARIZE_THRESH
FG_SEG_THRESH = 0.5  # cfg.TRAIN.FG_SEG_THRESH
BBOX_THRESH = 0.5  # cfg.TRAIN.BBOX_THRESH


def to_ours(box):
    """Released inclusive ``(x1, y1, x2, y2)`` → our ``[y1, x1, y2, x2)``."""
    x1, y1, x2, y2 = box
    return np.array([y1, x1, y2 + 1, x2 + 1], np.float32)


def bbox_overlaps(boxes, query):
    """``utils/bbox.pyx``: IoU with the ``+ 1`` areas. ``[N, 4]`` × ``[K, 4]`` → ``[N, K]``."""
    out = np.zeros((len(boxes), len(query)))
    for k, q in enumerate(query):
        q_area = (q[2] - q[0] + 1) * (q[3] - q[1] + 1)
        for n, b in enumerate(boxes):
            iw = min(b[2], q[2]) - max(b[0], q[0]) + 1
            if iw > 0:
                ih = min(b[3], q[3]) - max(b[1], q[1]) + 1
                if ih > 0:
                    ua = (b[2] - b[0] + 1) * (b[3] - b[1] + 1) + q_area - iw * ih
                    out[n, k] = iw * ih / ua
    return out


# ---------------------------------------------------------------- mask-level labels


def mask_overlap(box1, box2, mask1, mask2):
    """``mask_transform.mask_overlap``: IoU of two masks living in different boxes."""
    x1 = max(box1[0], box2[0])
    y1 = max(box1[1], box2[1])
    x2 = min(box1[2], box2[2])
    y2 = min(box1[3], box2[3])
    if x1 > x2 or y1 > y2:
        return 0
    w = x2 - x1 + 1
    h = y2 - y1 + 1
    start_ya = y1 - box1[1]
    start_xa = x1 - box1[0]
    inter_maska = mask1[start_ya : start_ya + h, start_xa : start_xa + w]
    start_yb = y1 - box2[1]
    start_xb = x1 - box2[0]
    inter_maskb = mask2[start_yb : start_yb + h, start_xb : start_xb + w]
    assert inter_maska.shape == inter_maskb.shape
    inter = np.logical_and(inter_maskb, inter_maska).sum()
    union = mask1.sum() + mask2.sum() - inter
    if union < 1.0:
        return 0
    return float(inter) / float(union)


def mask_layer_label(mask_pred, ex_box, gt_box, gt_mask, label):
    """``MaskLayer.forward_train`` for one box-foreground RoI.

    Args:
      mask_pred: ``[m, m]`` sigmoid output; ex_box / gt_box: inclusive int boxes;
      gt_mask: the GT mask inside ``gt_box``; label: the RoI's class.

    Returns:
      ``(label or 0, iou)``.
    """
    ex_mask = cv2.resize(
        mask_pred.astype(np.float32), (ex_box[2] - ex_box[0] + 1, ex_box[3] - ex_box[1] + 1)
    )
    ex_mask = ex_mask >= BINARIZE_THRESH
    iou = mask_overlap(ex_box, gt_box, ex_mask, gt_mask)
    return (0 if iou < FG_SEG_THRESH else label), iou


# ---------------------------------------------------------------- RoI sampling


def sample_rois(
    max_overlaps,
    rng,
    rois_per_image=64,
    fg_fraction=(0.3,),
    fg_lo=(0.5,),
    fg_hi=(1.0,),
    bg_fraction=(0.85, 0.15),
    bg_lo=(0.1, 0.0),
    bg_hi=(0.5, 0.1),
):
    """``proposal_target_layer._sample_rois``' index selection (cfg.TRAIN defaults).

    Returns:
      ``(fg_inds, bg_inds)`` int arrays (``bg_inds`` per range concatenated, then unique).
    """
    fg_inds = np.array([], dtype=int)
    for i in range(len(fg_fraction)):
        cur = np.where((max_overlaps >= fg_lo[i]) & (max_overlaps <= fg_hi[i]))[0]
        n = int(min(cur.size, np.round(rois_per_image * fg_fraction[i])))
        if cur.size > 0:
            cur = rng.choice(cur, size=n, replace=False)
        fg_inds = np.unique(np.hstack((fg_inds, cur)).astype(int))
    bg_per_image = rois_per_image - fg_inds.size
    bg_inds = np.array([], dtype=int)
    for i in range(len(bg_fraction)):
        cur = np.where((max_overlaps >= bg_lo[i]) & (max_overlaps <= bg_hi[i]))[0]
        n = int(min(cur.size, np.round(bg_per_image * bg_fraction[i])))
        if cur.size > 0:
            cur = rng.choice(cur, size=n, replace=False)
        bg_inds = np.unique(np.hstack((bg_inds, cur)).astype(int))
    return fg_inds, bg_inds


# ---------------------------------------------------------------- stage bridge


def bbox_transform_inv(boxes, deltas):
    """``bbox_transform.bbox_transform_inv`` (``+ 1`` widths), deltas ``(dx, dy, dw, dh)``."""
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx, dy, dw, dh = deltas[:, 0], deltas[:, 1], deltas[:, 2], deltas[:, 3]
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = np.exp(dw) * widths
    pred_h = np.exp(dh) * heights
    return np.stack(
        [
            pred_ctr_x - 0.5 * pred_w,
            pred_ctr_y - 0.5 * pred_h,
            pred_ctr_x + 0.5 * pred_w,
            pred_ctr_y + 0.5 * pred_h,
        ],
        axis=1,
    )


def clip_boxes(boxes, im_shape):
    """``bbox_transform.clip_boxes`` to ``[0, W - 1] × [0, H - 1]``."""
    out = boxes.copy()
    out[:, 0] = np.maximum(np.minimum(boxes[:, 0], im_shape[1] - 1), 0)
    out[:, 1] = np.maximum(np.minimum(boxes[:, 1], im_shape[0] - 1), 0)
    out[:, 2] = np.maximum(np.minimum(boxes[:, 2], im_shape[1] - 1), 0)
    out[:, 3] = np.maximum(np.minimum(boxes[:, 3], im_shape[0] - 1), 0)
    return out


def stage_bridge_train(rois, bbox_deltas, seg_scores, gt_boxes, im_shape):
    """``StageBridgeLayer.forward_train`` without appending the GT boxes.

    Args:
      rois: ``[R, 4]`` inclusive boxes; bbox_deltas: ``[R, 4·(N+1)]`` (as fed to the layer);
      seg_scores: ``[R, N+1]``; gt_boxes: ``[G, 4]``; im_shape: ``(H, W)``.

    Returns:
      ``(new_rois [R, 4], fg [R] bool, gt_assignment [R])``.
    """
    labels = seg_scores[:, 1:].argmax(axis=1) + 1
    deltas = np.stack([bbox_deltas[i, 4 * c : 4 * c + 4] for i, c in enumerate(labels)])
    new = clip_boxes(bbox_transform_inv(rois, deltas), im_shape)
    overlaps = bbox_overlaps(new, gt_boxes)
    return new, overlaps.max(axis=1) >= BBOX_THRESH, overlaps.argmax(axis=1)


# ---------------------------------------------------------------- mask voting (GPU)


def _mask_render(box, mask, height, width):
    """``mv_kernel.cu: mask_render``: one box's mask rendered on the image grid."""
    m = mask.shape[0]
    out = np.zeros((height, width), np.float32)
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1 + 1.0, y2 - y1 + 1.0
    flat = mask.reshape(-1)
    for h in range(height):
        for w in range(width):
            if w < x1 or w > x2 or h < y1 or h > y2:
                continue
            ix = (w - x1) * (m / bw)
            iy = (h - y1) * (m / bh)
            sx, sy = int(np.floor(ix)), int(np.floor(iy))
            if sx == m - 1 or sy == m - 1:  # the kernel's edge cases: no interpolation
                out[h, w] = flat[sy * m + sx]
                continue
            fx, fy = ix - sx, iy - sy
            tl = sy * m + sx
            out[h, w] = (
                (1 - fx) * (1 - fy) * flat[tl]
                + fx * (1 - fy) * flat[tl + 1]
                + (1 - fx) * fy * flat[tl + m]
                + fx * fy * flat[tl + m + 1]
            )
    return out


def _mask_resize(image_mask, bx, by, m):
    """``mv_kernel.cu: mask_resize``: the tight box's region resampled to ``m × m``."""
    height, width = image_mask.shape
    flat = image_mask.reshape(-1)
    out = np.zeros((m, m), np.float32)
    bw, bh = bx[1] - bx[0] + 1.0, by[1] - by[0] + 1.0
    for h in range(m):
        for w in range(m):
            ix = bx[0] + w * (bw / m)
            iy = by[0] + h * (bh / m)
            sx, sy = int(np.floor(ix)), int(np.floor(iy))
            if sx == width - 1 or sy == height - 1:
                out[h, w] = flat[sy * width + sx]
                continue
            fx, fy = ix - sx, iy - sy
            tl = sy * width + sx
            out[h, w] = (
                (1 - fx) * (1 - fy) * flat[tl]
                + fx * (1 - fy) * flat[tl + 1]
                + (1 - fx) * fy * flat[tl + width]
                + fx * fy * flat[tl + width + 1]
            )
    return out


def mask_voting(boxes, masks, scores, kept_boxes, kept_classes, height, width):
    """``gpu_mask_voting`` + ``mv`` for given kept detections.

    Args:
      boxes: ``[J, 4]`` inclusive boxes of all instances; masks ``[J, m, m]``;
      scores ``[J, N+1]``; kept_boxes ``[K, 4]``; kept_classes ``[K]`` (1..N).

    Returns:
      ``(voted masks [K, m, m], tight boxes [K, 4] inclusive, image masks [K, H, W])``: the
      image masks are the weighted sums before resizing (what the tight box is cut from).
    """
    m = masks.shape[-1]
    rendered = np.stack(
        [_mask_render(b, mk, height, width) for b, mk in zip(boxes, masks, strict=True)]
    )
    out_masks, out_boxes, image_masks = [], [], []
    for box, c in zip(kept_boxes, kept_classes, strict=True):
        ov = bbox_overlaps(boxes.astype(float), box[None].astype(float))[:, 0]
        inds = np.where(ov >= 0.5)[0]
        weights = scores[inds, c] / np.sum(scores[inds, c])
        agg = np.tensordot(weights, rendered[inds], axes=1).astype(np.float32)
        cols = np.where((agg > BINARIZE_THRESH).any(axis=0))[0]
        rows = np.where((agg > BINARIZE_THRESH).any(axis=1))[0]
        bx = (cols[0], cols[-1]) if len(cols) else (width // 2, width // 2)
        by = (rows[0], rows[-1]) if len(rows) else (height // 2, height // 2)
        out_masks.append(_mask_resize(agg, bx, by, m))
        out_boxes.append([bx[0], by[0], bx[1], by[1]])
        image_masks.append(agg)
    return np.stack(out_masks), np.array(out_boxes), np.stack(image_masks)
