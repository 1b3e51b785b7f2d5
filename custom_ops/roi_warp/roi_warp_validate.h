// Checks shared by the shape functions (roi_warp_ops.cc) and the kernels
// (roi_warp_kernels.cc). Every message names the argument, what was expected
// and what was given.
#ifndef MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_VALIDATE_H_
#define MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_VALIDATE_H_

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "roi_warp_math.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace mnc_roi_warp {

inline absl::Status ValidateAttrs(int crop_size, int pooled_size, float spatial_scale) {
  if (crop_size < 1 || pooled_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("crop_size and pooled_size must be >= 1, got crop_size = ", crop_size,
                     ", pooled_size = ", pooled_size));
  }
  if (crop_size % pooled_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("crop_size must be divisible by pooled_size, got crop_size = ", crop_size,
                     ", pooled_size = ", pooled_size));
  }
  if (crop_size / pooled_size > kMaxPoolWindow) {
    return absl::InvalidArgumentError(absl::StrCat(
        "crop_size / pooled_size must be <= ", kMaxPoolWindow,
        " (the argmax of a pooling window is stored as uint8), got ", crop_size, " / ",
        pooled_size, " = ", crop_size / pooled_size));
  }
  if (!(std::isfinite(spatial_scale) && spatial_scale > 0.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("spatial_scale must be finite and > 0, got ", spatial_scale));
  }
  return absl::OkStatus();
}

// Ranks, the box width of 4, matching R, and a non-empty feature map.
inline absl::Status ValidateInputShapes(const tensorflow::TensorShape& features,
                                        const tensorflow::TensorShape& boxes,
                                        const tensorflow::TensorShape& box_indices) {
  if (features.dims() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "features must be rank 4 [B, H, W, C], got shape ", features.DebugString()));
  }
  if (features.dim_size(1) <= 0 || features.dim_size(2) <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "features height and width must be > 0, got shape ", features.DebugString()));
  }
  if (boxes.dims() != 2 || boxes.dim_size(1) != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("boxes must have shape [R, 4], got shape ", boxes.DebugString()));
  }
  if (box_indices.dims() != 1 || box_indices.dim_size(0) != boxes.dim_size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "box_indices must have shape [R] with R = boxes.shape[0] = ", boxes.dim_size(0),
        ", got shape ", box_indices.DebugString()));
  }
  return absl::OkStatus();
}

// Values on the host: finite boxes, indices inside the batch.
inline absl::Status ValidateBoxValues(const float* boxes, const int32_t* box_indices,
                                      int64_t num_boxes, int64_t batch) {
  for (int64_t r = 0; r < num_boxes; ++r) {
    const float* b = boxes + 4 * r;
    if (!(std::isfinite(b[0]) && std::isfinite(b[1]) && std::isfinite(b[2]) &&
          std::isfinite(b[3]))) {
      return absl::InvalidArgumentError(absl::StrCat("boxes must be finite, got boxes[", r,
                                                     "] = [", b[0], ", ", b[1], ", ", b[2],
                                                     ", ", b[3], "]"));
    }
    if (box_indices[r] < 0 || box_indices[r] >= batch) {
      return absl::InvalidArgumentError(
          absl::StrCat("box_indices must be in [0, ", batch, ") (the features batch size), got ",
                       "box_indices[", r, "] = ", box_indices[r]));
    }
  }
  return absl::OkStatus();
}

}  // namespace mnc_roi_warp

#endif  // MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_VALIDATE_H_
