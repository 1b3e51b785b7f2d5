"""Helpers for the data tests: a hand-built COCO dataset with every segmentation kind."""

import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def write_png(path, height, width, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def rle_of(mask, compressed=True):
    """COCO RLE of a binary ``[H, W]`` mask; ``compressed=False`` gives a counts list."""
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": list(rle["size"]), "counts": rle["counts"].decode()}
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def bbox_of(mask):
    ys, xs = np.nonzero(mask)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() + 1 - xs.min()),
        float(ys.max() + 1 - ys.min()),
    ]


def handmade_coco(tmp_path, height=48, width=64):
    """Two PNG images; annotations as polygon (two parts), compressed RLE, uncompressed RLE and
    a crowd region; non-contiguous category ids 2 and 5 ("b" listed before "a").

    Returns ``(annotation_file, image_dir, pixels {image_id: uint8 [H, W, 3]})``.
    """
    image_dir = os.path.join(tmp_path, "images")
    os.makedirs(image_dir, exist_ok=True)
    pixels = {
        1: write_png(os.path.join(image_dir, "one.png"), height, width, 1),
        7: write_png(os.path.join(image_dir, "seven.png"), height, width, 2),
    }
    yy, xx = np.mgrid[:height, :width]
    disk = ((yy - 20) ** 2 + (xx - 40) ** 2 < 12**2).astype(np.uint8)
    ring = ((yy - 24) ** 2 + (xx - 20) ** 2 < 15**2) & ((yy - 24) ** 2 + (xx - 20) ** 2 >= 6**2)
    crowd = np.zeros((height, width), np.uint8)
    crowd[30:46, 44:62] = 1
    polygon = [[2.0, 3.0, 20.0, 3.5, 11.0, 17.0], [30.0, 30.0, 40.0, 30.0, 40.0, 40.0, 30.0, 40.0]]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 5, "segmentation": polygon,
         "bbox": [2.0, 3.0, 38.0, 37.0], "iscrowd": 0, "area": 1.0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rle_of(disk),
         "bbox": bbox_of(disk), "iscrowd": 0, "area": float(disk.sum())},
        {"id": 3, "image_id": 7, "category_id": 2, "segmentation": rle_of(ring, compressed=False),
         "bbox": bbox_of(ring), "iscrowd": 0, "area": float(ring.sum())},
        {"id": 4, "image_id": 7, "category_id": 5, "segmentation": rle_of(crowd, compressed=False),
         "bbox": bbox_of(crowd), "iscrowd": 1, "area": float(crowd.sum())},
    ]  # fmt: skip
    data = {
        "images": [
            {"id": 1, "file_name": "one.png", "height": height, "width": width},
            {"id": 7, "file_name": "seven.png", "height": height, "width": width},
        ],
        "annotations": anns,
        "categories": [{"id": 5, "name": "a"}, {"id": 2, "name": "b"}],
    }
    annotation_file = os.path.join(tmp_path, "instances.json")
    with open(annotation_file, "w") as f:
        json.dump(data, f)
    return annotation_file, image_dir, pixels
