// Host-compiled half of the standalone check: the CPU kernel's loops
// (roi_warp_cpu.h) run serially, exposed as plain functions because nvcc's
// front end cannot compile the header's vector types.
#include "../roi_warp_cpu.h"

namespace mnc_roi_warp {

void CpuForward(const float* features, const float* boxes, const int32_t* box_indices,
                const WarpDims& d, float* output, uint8_t* argmax) {
  ForwardBoxes(features, boxes, box_indices, d, 0, d.num_boxes, output, argmax);
}

void CpuBackward(const float* grads, const float* features, const float* boxes,
                 const int32_t* box_indices, const uint8_t* argmax, const WarpDims& d,
                 float* grad_features, float* grad_boxes) {
  std::vector<double> partial(d.num_boxes * ChannelGroups(d) * 4, 0.);
  for (int64_t b = 0; b < d.batch; ++b) {
    std::vector<int64_t> listed;
    for (int64_t r = 0; r < d.num_boxes; ++r) {
      if (box_indices[r] == b) listed.push_back(r);
    }
    BackwardImageChannels(grads, features, boxes, argmax, d, b, listed.data(),
                          static_cast<int64_t>(listed.size()), 0, d.channels, grad_features,
                          partial.data());
  }
  ReduceBoxGrad(partial.data(), d, grad_boxes);
}

}  // namespace mnc_roi_warp
