// Per-element math of RoI warping, shared by the CPU kernel, the CUDA kernel
// and the standalone nvcc check. No TensorFlow dependency on purpose: the
// standalone driver must build where TensorFlow-GPU is not installed.
//
// The sampling convention is tf.image.crop_and_resize's, applied to the box
// normalised as boxes_n = boxes * spatial_scale / max(size - 1, 1); the exact
// formula is written once, at the top of roi_warp_kernels.cc. The float
// operations below are done in the same order as TensorFlow's CPU
// crop_and_resize kernel, so the forward matches the stock-op reference to
// the last bit where the compiler does not contract multiply-adds.
#ifndef MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_MATH_H_
#define MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_MATH_H_

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define MNC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MNC_HOST_DEVICE inline
#endif

namespace mnc_roi_warp {

// Largest crop_size / pooled_size: the argmax inside a pooling window is
// stored as uint8, so a window may hold at most 256 samples.
constexpr int kMaxPoolWindow = 16;

// Sizes of one call. Layout (row-major): features [batch, height, width,
// channels], boxes [num_boxes, 4], output / argmax [num_boxes, pooled,
// pooled, channels].
struct WarpDims {
  int64_t batch;
  int64_t height;
  int64_t width;
  int64_t channels;
  int64_t num_boxes;
  int crop;
  int pooled;
  float spatial_scale;

  MNC_HOST_DEVICE int window() const { return crop / pooled; }
};

// Box coordinate in input-image pixels -> crop_and_resize's normalised
// coordinate. A feature map of size 1 along an axis would divide by zero;
// dividing by 1 instead makes every sample on that axis land on index 0
// (always inside), and the gradient for that axis' box coordinates is 0.
MNC_HOST_DEVICE float NormalizeCoord(float pixel, float spatial_scale, int size) {
  return pixel * spatial_scale / static_cast<float>(size > 1 ? size - 1 : 1);
}

// d NormalizeCoord / d pixel along y and x.
MNC_HOST_DEVICE void NormalizeGrad(const WarpDims& d, float* dy, float* dx) {
  *dy = d.spatial_scale / static_cast<float>(d.height > 1 ? d.height - 1 : 1);
  *dx = d.spatial_scale / static_cast<float>(d.width > 1 ? d.width - 1 : 1);
}

// Position (feature pixels) of crop sample i along one axis of a box whose
// normalised end points are c1n, c2n.
MNC_HOST_DEVICE float SamplePosition(float c1n, float c2n, int i, int crop, int size) {
  if (crop > 1) {
    const float scale = (c2n - c1n) * static_cast<float>(size - 1) / static_cast<float>(crop - 1);
    return c1n * static_cast<float>(size - 1) + static_cast<float>(i) * scale;
  }
  // A 1-sample crop takes the box centre (double, as crop_and_resize does).
  return static_cast<float>(0.5 * (c1n + c2n) * (size - 1));
}

// d SamplePosition / d c1n and / d c2n.
MNC_HOST_DEVICE void SamplePositionGrad(int i, int crop, int size, float* d_c1n, float* d_c2n) {
  const float extent = static_cast<float>(size - 1);
  if (crop > 1) {
    const float ratio = extent / static_cast<float>(crop - 1);
    *d_c1n = extent - static_cast<float>(i) * ratio;
    *d_c2n = static_cast<float>(i) * ratio;
  } else {
    *d_c1n = 0.5f * extent;
    *d_c2n = 0.5f * extent;
  }
}

// Where one sample falls along one axis.
struct AxisSample {
  int lo;       // floor(pos)
  int hi;       // ceil(pos); equals lo on an exact grid line
  float lerp;   // pos - lo, the weight of `hi`
  bool valid;   // 0 <= pos <= size - 1; outside samples read 0
  float d_c1n;  // d pos / d c1n
  float d_c2n;  // d pos / d c2n
};

MNC_HOST_DEVICE AxisSample MakeAxisSample(float c1n, float c2n, int i, int crop, int size) {
  AxisSample s;
  const float pos = SamplePosition(c1n, c2n, i, crop, size);
  SamplePositionGrad(i, crop, size, &s.d_c1n, &s.d_c2n);
  // Written as "inside" so that a NaN position (from inf box arithmetic)
  // counts as outside instead of reaching floorf -> int.
  s.valid = pos >= 0.f && pos <= static_cast<float>(size - 1);
  if (!s.valid) {
    s.lo = 0;
    s.hi = 0;
    s.lerp = 0.f;
    return s;
  }
  s.lo = static_cast<int>(floorf(pos));
  s.hi = static_cast<int>(ceilf(pos));
  s.lerp = pos - static_cast<float>(s.lo);
  return s;
}

// Bilinear value from the four corners (top/bottom = lo/hi along y,
// left/right = lo/hi along x), crop_and_resize's order of operations. T is
// float, or a vector of channels on the CPU.
template <typename T>
MNC_HOST_DEVICE T Bilinear(T tl, T tr, T bl, T br, float y_lerp, float x_lerp) {
  const T top = tl + (tr - tl) * x_lerp;
  const T bottom = bl + (br - bl) * x_lerp;
  return top + (bottom - top) * y_lerp;
}

// d Bilinear / d y_lerp (= d / d pos_y). Zero on an exact grid line, where
// bottom == top: the same one-sided choice as crop_and_resize's gradient.
template <typename T>
MNC_HOST_DEVICE T BilinearGradY(T tl, T tr, T bl, T br, float x_lerp) {
  return (1.f - x_lerp) * (bl - tl) + x_lerp * (br - tr);
}

// d Bilinear / d x_lerp (= d / d pos_x).
template <typename T>
MNC_HOST_DEVICE T BilinearGradX(T tl, T tr, T bl, T br, float y_lerp) {
  return (1.f - y_lerp) * (tr - tl) + y_lerp * (br - bl);
}

}  // namespace mnc_roi_warp

#endif  // MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_MATH_H_
