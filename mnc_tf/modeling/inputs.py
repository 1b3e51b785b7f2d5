"""The model's inputs: images / the features dict, and the padded training targets
(docs/CONTRACTS.md), validated and converted for :class:`mnc_tf.modeling.mnc.MNC`."""

import numpy as np
import tensorflow as tf


def array_to_tensor(x):
    """NumPy floats → float32 tensors, NumPy integers (uint8 pixels) as they are."""
    if isinstance(x, (np.ndarray, np.generic)):
        return tf.convert_to_tensor(x, tf.float32 if x.dtype.kind == "f" else None)
    return x


def prepare_inputs(inputs):
    """→ ``(images float32 [B, H, W, 3], image_size float32 [B, 2], image_ids or None)``."""
    image_ids = None
    if isinstance(inputs, dict):
        if "images" not in inputs:
            raise ValueError(f"inputs dict must have an 'images' key, got keys {sorted(inputs)}")
        images, info = inputs["images"], inputs.get("image_info")
        image_ids = inputs.get("image_id")
    else:
        images, info = inputs, None
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be [B, H, W, 3] RGB (0..255), got shape {tuple(images.shape)}"
        )
    images = tf.cast(images, tf.float32)
    if info is not None:
        info = tf.convert_to_tensor(info, tf.float32)
        if info.shape.rank != 3 or tuple(info.shape[1:]) != (4, 2):
            raise ValueError(f"image_info must be [B, 4, 2], got shape {tuple(info.shape)}")
        image_size = info[:, 1, :]
    else:
        shape = tf.shape(images)
        image_size = tf.cast(tf.tile(shape[None, 1:3], tf.stack([shape[0], 1])), tf.float32)
    return images, image_size, image_ids


def prepare_targets(targets, images, num_classes):
    """Validate padded targets (labels ``<= num_classes``) → dict ``boxes, labels, valid,
    masks``."""
    if not isinstance(targets, dict):
        raise ValueError(
            "targets must be a dict with 'boxes', 'labels', 'masks' "
            f"(docs/CONTRACTS.md), got {type(targets).__name__}"
        )
    missing = [k for k in ("boxes", "labels", "masks") if k not in targets]
    if missing:
        raise ValueError(f"targets is missing {missing}; it has keys {sorted(targets)}")
    boxes = tf.cast(tf.convert_to_tensor(targets["boxes"]), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(targets["labels"]), tf.int32)
    masks = tf.convert_to_tensor(targets["masks"])
    if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"targets['boxes'] must be [B, N, 4], got {tuple(boxes.shape)}")
    if labels.shape.rank != 2:
        raise ValueError(f"targets['labels'] must be [B, N], got {tuple(labels.shape)}")
    if masks.shape.rank != 4:
        raise ValueError(f"targets['masks'] must be [B, N, H, W], got {tuple(masks.shape)}")
    if boxes.shape[1] == 0:
        raise ValueError("targets must have N >= 1 instance slots (pad with label -1)")
    for i, (a, b) in enumerate(zip(masks.shape[2:], images.shape[1:3], strict=True)):
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"targets['masks'] spatial size must equal the images' "
                f"{tuple(images.shape[1:3])}, got {tuple(masks.shape[2:])} (axis {i + 2})"
            )
    if masks.dtype not in (tf.uint8, tf.float32):
        masks = tf.cast(masks, tf.uint8)
    check = tf.debugging.assert_less_equal(
        labels,
        num_classes,
        message=f"targets['labels'] must be <= num_classes={num_classes}",
    )
    with tf.control_dependencies([check]):
        labels = tf.identity(labels)
    return {"boxes": boxes, "labels": labels, "valid": labels > 0, "masks": masks}
