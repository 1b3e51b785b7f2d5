"""Synthetic "shapes" dataset written in COCO format (JPEG images + instances JSON).

Used by tests, examples and quick benchmarks; it goes through exactly the COCO code path a
user's own dataset does. The task is built to be learnable by a tiny model on a CPU:

- classes differ by **shape** (circle, square, triangle, hexagon, star); colours are random
  so colour carries no class information;
- shapes span ``min_size``–``max_size`` of the image side (never below 16 px across);
- shapes overlap and occlude each other, but every shape keeps at least
  ``1 - max_occlusion`` of its pixels visible;
- masks are exact: each shape is painted through the very mask that is annotated. An
  unoccluded shape is stored as its polygon (pycocotools rasterises that polygon to the
  painted pixels); an occluded one as an RLE of its visible pixels;
- category ids are non-contiguous (1, 3, 7, 8, 12) to exercise the label ↔ id mapping;
- backgrounds are textured (smooth colour field, stripes, noise, clutter lines).

Deterministic for ``(seed, split)``; image ``i`` depends only on ``(seed, split, i)``, so a
larger ``num_images`` extends a smaller one. Different splits draw from disjoint random
streams, so a ``"val"`` split holds different images than ``"train"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib

import cv2
import numpy as np
from pycocotools import mask as mask_utils

# (name, COCO category id): ids deliberately non-contiguous.
SHAPE_CLASSES = (("circle", 1), ("square", 3), ("triangle", 7), ("hexagon", 8), ("star", 12))

_MIN_SIDE_PX = 16.0  # smallest shape extent, so shapes survive a stride-16 backbone


@dataclasses.dataclass(frozen=True)
class ShapesDataset:
    """Where :func:`make_shapes_dataset` wrote its output."""

    annotation_file: str
    image_dir: str
    num_images: int
    num_instances: int
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]


def make_shapes_dataset(
    out_dir,
    num_images,
    seed=0,
    image_size=128,
    num_classes=3,
    min_shapes=1,
    max_shapes=4,
    split=None,
    min_size=0.15,
    max_size=0.6,
    max_occlusion=0.4,
    jpeg_quality=92,
):
    """Write a COCO-format shapes dataset.

    Layout: ``out_dir/images/*.jpg`` and ``out_dir/annotations.json``; with ``split`` given,
    ``out_dir/<split>/images`` and ``out_dir/<split>/annotations.json``.

    Args:
      out_dir: output folder (created).
      num_images: images to write.
      seed: random seed; together with ``split`` it fixes every pixel and annotation.
      image_size: ``int`` (square) or ``(height, width)``.
      num_classes: 1..5 shape classes (see :data:`SHAPE_CLASSES`).
      min_shapes, max_shapes: instances per image (fewer if no placement satisfies the
        occlusion limit after many tries).
      split: ``None`` or a name (``"train"``, ``"val"``, ...) selecting a disjoint stream.
      min_size, max_size: shape extent (circumscribed diameter) as a fraction of the
        shorter image side.
      max_occlusion: largest fraction of a shape that later shapes may cover.
      jpeg_quality: JPEG quality of the written images.

    Returns:
      :class:`ShapesDataset` with the paths and counts.
    """
    num_images = _check_int(num_images, "num_images", 0)
    num_classes = _check_int(num_classes, "num_classes", 1)
    if num_classes > len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be <= {len(SHAPE_CLASSES)}, got {num_classes}")
    min_shapes = _check_int(min_shapes, "min_shapes", 0)
    max_shapes = _check_int(max_shapes, "max_shapes", 1)
    if max_shapes < min_shapes:
        raise ValueError(f"max_shapes ({max_shapes}) must be >= min_shapes ({min_shapes})")
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    height, width = (int(v) for v in image_size)
    if min(height, width) < 32:
        raise ValueError(f"image_size must be at least 32 px, got {image_size}")
    if not 0 < min_size <= max_size <= 1:
        raise ValueError(f"need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
    if not 0 <= max_occlusion < 1:
        raise ValueError(f"max_occlusion must be in [0, 1), got {max_occlusion}")

    root = os.path.join(os.fspath(out_dir), split) if split else os.fspath(out_dir)
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    classes = SHAPE_CLASSES[:num_classes]
    stream = zlib.crc32(split.encode()) if split else 0
    prefix = f"{split}_" if split else ""

    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(stream, i)))
        pixels, instances = _draw_image(
            rng, height, width, classes, min_shapes, max_shapes, min_size, max_size,
            max_occlusion,
        )  # fmt: skip
        image_id = i + 1
        file_name = f"{prefix}{i:06d}.jpg"
        cv2.imwrite(
            os.path.join(image_dir, file_name),
            cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)],
        )
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for category_id, segmentation, visible in instances:
            rle = mask_utils.encode(np.asfortranarray(visible))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": segmentation,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {
            "description": "mnc_tf synthetic shapes",
            "seed": int(seed),
            "split": split,
            "image_size": [height, width],
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": name, "supercategory": "shape"} for name, cid in classes
        ],
    }
    annotation_file = os.path.join(root, "annotations.json")
    with open(annotation_file, "w") as f:
        json.dump(data, f)
    return ShapesDataset(
        annotation_file=annotation_file,
        image_dir=image_dir,
        num_images=num_images,
        num_instances=len(annotations),
        class_names=tuple(n for n, _ in classes),
        category_ids=tuple(c for _, c in classes),
    )


def _check_int(value, name, minimum):
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _polygon(rng, name, cy, cx, radius):
    """Flat COCO polygon ``[x0, y0, x1, y1, ...]`` (rounded to 0.01 px) of one shape."""
    turn = rng.uniform(0, 2 * np.pi)
    if name == "circle":
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.full(48, radius)
    elif name == "star":
        angles = turn + np.linspace(0, 2 * np.pi, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    else:
        corners = {"square": 4, "triangle": 3, "hexagon": 6}[name]
        angles = turn + np.linspace(0, 2 * np.pi, corners, endpoint=False)
        radii = np.full(corners, radius)
    xs = cx + radii * np.cos(angles)
    ys = cy + radii * np.sin(angles)
    return [round(float(v), 2) for v in np.stack([xs, ys], axis=1).reshape(-1)]


def _rasterise(polygon, height, width):
    rle = mask_utils.frPyObjects([polygon], height, width)
    return mask_utils.decode(rle)[:, :, 0].astype(bool)


def _background(rng, height, width):
    """Textured float32 background: base colour + smooth field + stripes + noise + lines."""
    base = rng.uniform(0, 255, size=3)
    field = cv2.resize(
        rng.normal(0, 35, size=(4, 4, 3)).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 24)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    image = base + field + rng.uniform(0, 18) * stripes[..., None]
    image = image + rng.normal(0, 6, size=(height, width, 3))
    for _ in range(int(rng.integers(0, 4))):  # clutter that is not an object
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        image = cv2.line(image, p1, p2, rng.uniform(0, 255, size=3).tolist(), 1)
    return image.astype(np.float32), base


def _shape_colour(rng, avoid):
    """Random colour far (L1) from the background base and the colours already used."""
    colour = rng.uniform(0, 255, size=3)
    for _ in range(64):
        if all(np.abs(colour - a).sum() >= (150 if i == 0 else 90) for i, a in enumerate(avoid)):
            break
        colour = rng.uniform(0, 255, size=3)
    return colour


def _draw_image(
    rng, height, width, classes, min_shapes, max_shapes, min_size, max_size, max_occlusion
):
    """One image and its instances ``[(category_id, segmentation, visible_mask)]``."""
    image, base = _background(rng, height, width)
    side = min(height, width)
    lo = max(min_size * side, min(_MIN_SIDE_PX, max_size * side))
    hi = max(max_size * side, lo)
    placed = []  # dicts: name/cid/polygon/full/visible
    colours = [base]
    for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
        for _attempt in range(40):
            name, cid = classes[int(rng.integers(len(classes)))]
            radius = rng.uniform(lo, hi) / 2
            cy = rng.uniform(radius, height - radius)
            cx = rng.uniform(radius, width - radius)
            polygon = _polygon(rng, name, cy, cx, radius)
            full = _rasterise(polygon, height, width)
            if full.sum() < 16:
                continue
            ok = all(
                (p["visible"] & ~full).sum() >= (1 - max_occlusion) * p["full"].sum()
                for p in placed
            )
            if ok:
                break
        else:
            break  # crowded image: stop adding shapes
        for p in placed:
            p["visible"] = p["visible"] & ~full
        colour = _shape_colour(rng, colours)
        colours.append(colour)
        texture = colour + rng.normal(0, 8, size=(height, width, 3))
        image[full] = texture[full]
        placed.append(
            {"name": name, "cid": cid, "polygon": polygon, "full": full, "visible": full.copy()}
        )
    instances = []
    for p in placed:
        visible = p["visible"].astype(np.uint8)
        if p["visible"].sum() == p["full"].sum():
            segmentation = [p["polygon"]]
        else:
            rle = mask_utils.encode(np.asfortranarray(visible))
            segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        instances.append((p["cid"], segmentation, visible))
    return np.clip(image, 0, 255).astype(np.uint8), instances
