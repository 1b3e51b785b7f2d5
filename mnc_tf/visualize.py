"""Drawing instance segmentations: masks in distinct colours, boxes, class names and scores.

NumPy + OpenCV only (no matplotlib), so it runs in notebooks, CLIs and serving clients alike::

    from mnc_tf import visualize
    out = model.predict(images)                      # boxes in resized-image pixels
    picture = visualize.draw_instances(
        images[0].astype("uint8"), out["boxes"][0][:n], out["masks"][0][:n],
        out["classes"][0][:n], out["scores"][0][:n], class_names=model.class_names,
        score_threshold=model.config.postprocess.predict_score_threshold,  # default 0.5
        mask_threshold=model.config.postprocess.mask_threshold)   # default 0.4
    visualize.save_visualization("pred.png", picture)

Conventions: images are RGB uint8 ``[H, W, 3]``; boxes ``[N, 4]`` float ``y1, x1, y2, x2`` in
the pixels of *that* image; masks either full-image ``[N, H, W]`` (binary or probabilities)
or box-relative ``[N, m, m]`` probabilities as the model outputs them (pasted into the image
with :func:`mnc_tf.core.masks.paste_masks`).

Thresholds: these functions see arrays, not a model, so their defaults are those of a default
:class:`mnc_tf.MNCConfig` (``mask_binarize_threshold``, ``predict_score_threshold``). Pass the
model's — ``model.config.postprocess.mask_threshold``, or a Predictor's ``mask_threshold`` /
``score_threshold`` — when drawing its detections.
"""

import colorsys
import os
from collections.abc import Mapping

import cv2
import numpy as np

from mnc_tf.config import MNCConfig

# Golden-ratio hue steps give well-separated colours for any number of instances.
_GOLDEN = 0.618033988749895

# The defaults for drawings made without a model (module docstring): a default config's.
DEFAULT_MASK_THRESHOLD = MNCConfig().postprocess.mask_threshold
DEFAULT_SCORE_THRESHOLD = MNCConfig().postprocess.predict_score_threshold


def instance_colors(n, saturation=0.85, value=0.95):
    """``n`` distinct RGB colours, uint8 ``[n, 3]``; deterministic (instance i → colour i)."""
    hues = (np.arange(n) * _GOLDEN + 0.1) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, saturation, value) for h in hues]
    return np.round(np.asarray(rgb, np.float64).reshape(n, 3) * 255).astype(np.uint8)


def load_image(path):
    """Read an image file as RGB uint8 ``[H, W, 3]``, decoded exactly as the export does.

    Uses ``tf.io.decode_image(channels=3, expand_animations=False)`` rather than
    ``cv2.imread``: OpenCV applies the JPEG EXIF orientation, the exported model does not, and
    the boxes would then not line up with the picture.
    """
    import tensorflow as tf

    with open(path, "rb") as f:
        encoded = f.read()
    return tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()


def full_image_masks(masks, boxes, image_size, threshold=DEFAULT_MASK_THRESHOLD):
    """Box-relative soft masks → full-image masks (NumPy wrapper of ``paste_masks``).

    Args:
      masks: ``[N, m, m]`` probabilities; boxes: ``[N, 4]`` ``y1, x1, y2, x2`` in the pixels
        of the target image; image_size: ``(H, W)``.
      threshold: binarisation threshold (pass the model's; ``None`` → soft float32 masks).

    Returns:
      uint8 ``[N, H, W]`` (float32 when ``threshold`` is ``None``).
    """
    from mnc_tf.core.masks import paste_masks

    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    height, width = int(image_size[0]), int(image_size[1])
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"masks: expected [N, m, m] with N = len(boxes) = {boxes.shape[0]}, "
            f"got shape {masks.shape}"
        )
    if masks.shape[0] == 0:
        dtype = np.float32 if threshold is None else np.uint8
        return np.zeros((0, height, width), dtype)
    return np.asarray(paste_masks(masks, boxes, (height, width), threshold=threshold))


def _class_name(class_names, class_id):
    if class_names is None:
        return str(class_id)
    if isinstance(class_names, Mapping):
        return str(class_names.get(class_id, class_id))
    if 1 <= class_id <= len(class_names):
        return str(class_names[class_id - 1])
    return str(class_id)


def _as_rgb_uint8(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image: expected [H, W, 3] RGB (or [H, W] gray), got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def draw_instances(
    image,
    boxes,
    masks=None,
    classes=None,
    scores=None,
    class_names=None,
    *,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    mask_threshold=DEFAULT_MASK_THRESHOLD,
    alpha=0.45,
    show_boxes=True,
    show_labels=True,
    colors=None,
):
    """Draw instances onto a copy of ``image``.

    Args:
      image: RGB ``[H, W, 3]`` (uint8, or float 0..255), or ``[H, W]`` grayscale.
      boxes: ``[N, 4]`` ``y1, x1, y2, x2`` in pixels of ``image``.
      masks: ``None``, full-image ``[N, H, W]`` (binary or probabilities), or box-relative
        ``[N, m, m]`` probabilities (pasted at ``boxes``). A ``[N, H, W]`` array whose size
        equals the image's is always taken as full-image.
      classes: ``[N]`` int class ids (contiguous labels or dataset category ids).
      scores: ``[N]`` floats; instances below ``score_threshold`` are not drawn (default: a
        default ``MNCConfig.postprocess.predict_score_threshold``, 0.5; pass the model's
        ``config.postprocess.predict_score_threshold`` or a Predictor's ``score_threshold``,
        or 0 to draw every detection).
      class_names: ``None`` (ids are printed), a mapping ``class id → name`` (use it for
        dataset category ids) or a sequence with ``class_names[label - 1]`` (contiguous
        labels, like ``model.class_names``).
      mask_threshold: binarisation of soft masks (default: a default
        ``MNCConfig.postprocess.mask_threshold``, 0.4 as in the released MNC code; pass the
        model's ``config.postprocess.mask_threshold`` or a Predictor's ``mask_threshold``).
      alpha: mask opacity.
      colors: optional ``[N, 3]`` RGB uint8; default :func:`instance_colors`.

    Returns:
      uint8 ``[H, W, 3]`` RGB picture.
    """
    out = _as_rgb_uint8(image).copy()
    height, width = out.shape[:2]
    boxes = np.asarray(boxes, np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected [N, 4] y1, x1, y2, x2, got shape {boxes.shape}")
    n = boxes.shape[0]

    def per_instance(name, value, dtype):
        if value is None:
            return None
        value = np.asarray(value, dtype).reshape(-1)
        if value.shape[0] != n:
            raise ValueError(f"{name}: expected {n} values (one per box), got {value.shape[0]}")
        return value

    classes = per_instance("classes", classes, np.int64)
    scores = per_instance("scores", scores, np.float32)
    if colors is None:
        colors = instance_colors(n)
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)
    if colors.shape[0] < n:
        raise ValueError(f"colors: expected at least {n} colours, got {colors.shape[0]}")

    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[0] != n:
            raise ValueError(
                f"masks: expected [N, H, W] or [N, m, m] with N = {n}, got shape {masks.shape}"
            )
        if masks.shape[1:] != (height, width):
            masks = full_image_masks(masks, boxes, (height, width), threshold=None)
        masks = masks.astype(np.float32) >= mask_threshold

    keep = np.ones(n, bool) if scores is None else scores >= score_threshold
    # Lowest score first, so the most confident instance ends up on top.
    order = np.arange(n) if scores is None else np.argsort(scores, kind="stable")
    order = [i for i in order if keep[i]]

    if masks is not None:
        overlay = out.astype(np.float32)
        for i in order:
            m = masks[i]
            overlay[m] = (1.0 - alpha) * overlay[m] + alpha * colors[i].astype(np.float32)
        out = np.round(overlay).astype(np.uint8)
        for i in order:
            contours, _ = cv2.findContours(
                masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in colors[i]), 1)

    thickness = max(1, int(round(min(height, width) / 300)))
    font_scale = max(0.3, min(height, width) / 900)
    for i in order:
        color = tuple(int(c) for c in colors[i])
        y1, x1, y2, x2 = boxes[i]
        p1 = (int(round(x1)), int(round(y1)))
        p2 = (int(round(x2)) - 1, int(round(y2)) - 1)
        if show_boxes:
            cv2.rectangle(out, p1, p2, color, thickness)
        if show_labels and (classes is not None or scores is not None):
            parts = []
            if classes is not None:
                parts.append(_class_name(class_names, int(classes[i])))
            if scores is not None:
                parts.append(f"{scores[i]:.2f}")
            _draw_label(out, " ".join(parts), p1, color, font_scale)
    return out


def _draw_label(image, text, corner, color, font_scale):
    """Text on a filled box just above ``corner`` (inside the image when at the top)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), baseline = cv2.getTextSize(text, font, font_scale, 1)
    x = min(max(corner[0], 0), max(image.shape[1] - tw - 2, 0))
    y = corner[1] - th - baseline - 2
    if y < 0:
        y = max(corner[1], 0)
    cv2.rectangle(image, (x, y), (x + tw + 2, y + th + baseline + 2), color, -1)
    # Dark text on light colours, white on dark ones (luma of the fill).
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if luma > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y + th + 1), font, font_scale, text_color, 1, cv2.LINE_AA)


def save_visualization(path, image, boxes=None, masks=None, classes=None, scores=None,
                       class_names=None, **kwargs):  # fmt: skip
    """Write a picture to ``path`` (format from the extension; PNG recommended).

    With ``boxes`` given, draws the instances first (:func:`draw_instances`, same arguments);
    otherwise ``image`` is written as is. Parent directories are created.

    Returns:
      ``path``.
    """
    picture = (
        draw_instances(image, boxes, masks, classes, scores, class_names, **kwargs)
        if boxes is not None
        else _as_rgb_uint8(image)
    )
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    try:
        written = cv2.imwrite(os.fspath(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    except cv2.error as e:  # e.g. an extension OpenCV has no encoder for
        raise OSError(f"path: could not write an image to {path!r}: {e}") from None
    if not written:
        raise OSError(f"path: could not write an image to {path!r}")
    return path
