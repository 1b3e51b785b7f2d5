"""Hand-built ground truth for evaluator tests (masks are axis-aligned rectangles)."""

import numpy as np
from pycocotools import mask as mask_utils

H, W = 40, 50
CATEGORY_IDS = [4, 9]  # label 1 -> 4, label 2 -> 9


def rect_mask(y1, x1, y2, x2, height=H, width=W):
    mask = np.zeros((height, width), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def make_gt(instances, num_images=2, height=H, width=W):
    """COCO dict from ``[(image_id, label, (y1, x1, y2, x2), iscrowd)]`` rectangles."""
    annotations = []
    for k, (image_id, label, (y1, x1, y2, x2), crowd) in enumerate(instances):
        mask = rect_mask(y1, x1, y2, x2, height, width)
        rle = mask_utils.encode(np.asfortranarray(mask))
        annotations.append(
            {
                "id": k + 1,
                "image_id": image_id,
                "category_id": CATEGORY_IDS[label - 1],
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "area": float(mask.sum()),
                "iscrowd": int(crowd),
            }
        )
    return {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "height": height, "width": width}
            for i in range(1, num_images + 1)
        ],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS],
    }


def detections(rows, height=H, width=W):
    """Detections dict from ``[(label, (y1, x1, y2, x2), score)]`` rectangles."""
    boxes = np.array([r[1] for r in rows], np.float32).reshape(-1, 4)
    masks = (
        np.stack([rect_mask(*r[1], height, width) for r in rows])
        if rows
        else np.zeros((0, height, width), np.uint8)
    )
    return {
        "boxes": boxes,
        "scores": np.array([r[2] for r in rows], np.float32),
        "classes": np.array([r[0] for r in rows], np.int32),
        "masks": masks,
    }
