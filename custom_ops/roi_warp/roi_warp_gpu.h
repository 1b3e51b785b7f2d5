// CUDA launchers of RoI warping (defined in roi_warp_kernels.cu.cc). No
// TensorFlow or CUDA types here, so that the TF kernel file compiles with a
// plain C++ compiler and the standalone check needs no TensorFlow.
//
// All tensor pointers are device pointers with the layouts of WarpDims;
// `stream` is a cudaStream_t. Each launcher returns nullptr on success, else
// a static CUDA error string.
#ifndef MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_GPU_H_
#define MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_GPU_H_

#include <stddef.h>
#include <stdint.h>

#include "roi_warp_math.h"

namespace mnc_roi_warp {

// Copies boxes [R, 4] and box_indices [R] (validated on the host) to the
// device on `stream` and waits for the copies: the host buffers may be
// pinned memory that TensorFlow reuses as soon as the kernel returns.
const char* GpuUploadBoxes(const float* host_boxes, const int32_t* host_box_indices,
                           int64_t num_boxes, float* boxes, int32_t* box_indices, void* stream);

// output [R, P, P, C] and argmax [R, P, P, C] (window slot of each max).
const char* GpuForward(const float* features, const float* boxes, const int32_t* box_indices,
                       const WarpDims& d, float* output, uint8_t* argmax, void* stream);

// Floats of scratch GpuBackward needs (per-block partial box gradients).
int64_t GpuBackwardScratchSize(const WarpDims& d);

// grad_features [B, H, W, C] (accumulated with atomics: not bitwise
// deterministic) and grad_boxes [R, 4] (block partials reduced in a fixed
// order: deterministic).
const char* GpuBackward(const float* grads, const float* features, const float* boxes,
                        const int32_t* box_indices, const uint8_t* argmax, const WarpDims& d,
                        float* grad_features, float* grad_boxes, float* scratch, void* stream);

}  // namespace mnc_roi_warp

#endif  // MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_GPU_H_
