"""TensorFlow ops of mnc_tf: RoI warping (custom op and stock-op reference), RLE masks, flip."""

from mnc_tf.ops._loader import OpLibraryNotFoundError, library_available, load_library
from mnc_tf.ops.image import flip_left_right
from mnc_tf.ops.rle import decode_rle, rasterize_masks
from mnc_tf.ops.roi_warp import (
    get_roi_warp_implementation,
    resolve_roi_warp_implementation,
    roi_warp,
    roi_warp_implementation,
    roi_warp_reference,
)

__all__ = [
    "OpLibraryNotFoundError",
    "decode_rle",
    "flip_left_right",
    "get_roi_warp_implementation",
    "library_available",
    "load_library",
    "rasterize_masks",
    "resolve_roi_warp_implementation",
    "roi_warp",
    "roi_warp_implementation",
    "roi_warp_reference",
]
