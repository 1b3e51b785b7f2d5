// CPU loops of RoI warping on raw NHWC pointers. No TensorFlow dependency:
// the TF kernel (roi_warp_kernels.cc) splits the work into the ranges these
// functions take and runs them on the device thread pool; the standalone
// CUDA check runs the same functions serially as its CPU reference (from a
// host-compiled file: nvcc's front end rejects the vector types used here).
//
// Layout (row-major): features [B, H, W, C], boxes [R, 4] (y1, x1, y2, x2 in
// input-image pixels), box_indices [R], output / argmax [R, P, P, C] with
// P = pooled, grad_features [B, H, W, C].
//
// Channels are processed kLanes at a time in GCC/Clang vector types: for one
// output cell and one group of channels, the whole pooling window is reduced
// in registers, so the running max, its argmax and the routed gradient never
// go through memory, and no masked stores are needed.
#ifndef MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_CPU_H_
#define MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_CPU_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "roi_warp_math.h"

namespace mnc_roi_warp {

constexpr int kLanes = 8;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef uint8_t ByteVec __attribute__((vector_size(kLanes)));

// Loads / stores of n <= kLanes channels; lanes past n read as 0. The
// full-width case is a single unaligned vector move.
inline Vec LoadVec(const float* p, int n) {
  Vec v = {};
  if (__builtin_expect(n == kLanes, 1)) {
    std::memcpy(&v, p, sizeof(Vec));
  } else {
    for (int i = 0; i < n; ++i) v[i] = p[i];
  }
  return v;
}
inline void StoreVec(float* p, Vec v, int n) {
  if (__builtin_expect(n == kLanes, 1)) {
    std::memcpy(p, &v, sizeof(Vec));
  } else {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
}

// Sample geometry of one box along y (ys[crop]) and x (xs[crop]).
inline void BoxAxes(const float* box, const WarpDims& d, AxisSample* ys, AxisSample* xs) {
  const int h = static_cast<int>(d.height);
  const int w = static_cast<int>(d.width);
  const float y1n = NormalizeCoord(box[0], d.spatial_scale, h);
  const float x1n = NormalizeCoord(box[1], d.spatial_scale, w);
  const float y2n = NormalizeCoord(box[2], d.spatial_scale, h);
  const float x2n = NormalizeCoord(box[3], d.spatial_scale, w);
  for (int i = 0; i < d.crop; ++i) {
    ys[i] = MakeAxisSample(y1n, y2n, i, d.crop, h);
    xs[i] = MakeAxisSample(x1n, x2n, i, d.crop, w);
  }
}

// One sample of a pooling window: where its four corners start (offsets in
// floats from the image start; channel 0) and its weights.
struct WindowSample {
  bool valid;
  int64_t tl, tr, bl, br;
  float y_lerp, x_lerp;
  float d_y1n, d_y2n, d_x1n, d_x2n;  // d pos_y / d y1n, ... (backward only)
};

// Fills window[k * k] for output cell (py, px), slot = wy * k + wx.
inline void WindowSamples(const AxisSample* ys, const AxisSample* xs, int k, int64_t py,
                          int64_t px, int64_t width, int64_t channels, WindowSample* window) {
  for (int wy = 0; wy < k; ++wy) {
    const AxisSample& ay = ys[py * k + wy];
    for (int wx = 0; wx < k; ++wx) {
      const AxisSample& ax = xs[px * k + wx];
      WindowSample& s = window[wy * k + wx];
      s.valid = ay.valid && ax.valid;
      s.tl = (ay.lo * width + ax.lo) * channels;
      s.tr = (ay.lo * width + ax.hi) * channels;
      s.bl = (ay.hi * width + ax.lo) * channels;
      s.br = (ay.hi * width + ax.hi) * channels;
      s.y_lerp = ay.lerp;
      s.x_lerp = ax.lerp;
      s.d_y1n = ay.d_c1n;
      s.d_y2n = ay.d_c2n;
      s.d_x1n = ax.d_c1n;
      s.d_x2n = ax.d_c2n;
    }
  }
}

// Forward for boxes [begin, end): warp, pool, and record the window slot of
// each max. Slot 0 initialises and later slots replace only on strictly
// greater values, so ties keep the first slot in row-major order, as
// max_pool2d does. Samples outside the map have value 0.
inline void ForwardBoxes(const float* features, const float* boxes, const int32_t* box_indices,
                         const WarpDims& d, int64_t begin, int64_t end, float* output,
                         uint8_t* argmax) {
  const int k = d.window(), slots = k * k;
  const int64_t P = d.pooled, W = d.width, C = d.channels;
  std::vector<AxisSample> ys(d.crop), xs(d.crop);
  std::vector<WindowSample> window(slots);
  for (int64_t r = begin; r < end; ++r) {
    BoxAxes(boxes + 4 * r, d, ys.data(), xs.data());
    const float* image = features + box_indices[r] * d.height * W * C;
    for (int64_t py = 0; py < P; ++py) {
      for (int64_t px = 0; px < P; ++px) {
        WindowSamples(ys.data(), xs.data(), k, py, px, W, C, window.data());
        const int64_t cell = ((r * P + py) * P + px) * C;
        for (int64_t c = 0; c < C; c += kLanes) {
          const int n = C - c < kLanes ? static_cast<int>(C - c) : kLanes;
          Vec best = {}, best_slot = {};
          for (int slot = 0; slot < slots; ++slot) {
            const WindowSample& s = window[slot];
            Vec v = {};
            if (s.valid) {
              const float* at = image + c;
              v = Bilinear(LoadVec(at + s.tl, n), LoadVec(at + s.tr, n), LoadVec(at + s.bl, n),
                           LoadVec(at + s.br, n), s.y_lerp, s.x_lerp);
            }
            if (slot == 0) {
              best = v;
            } else {
              const auto take = v > best;
              best = take ? v : best;
              best_slot = take ? Vec{} + static_cast<float>(slot) : best_slot;
            }
          }
          StoreVec(output + cell + c, best, n);
          const ByteVec slot_bytes = __builtin_convertvector(best_slot, ByteVec);
          std::memcpy(argmax + cell + c, &slot_bytes, n);
        }
      }
    }
  }
}

// Number of kLanes-channel groups; the backward's box-gradient shares are
// kept per group so that the summation order never depends on how channels
// are split between threads.
inline int64_t ChannelGroups(const WarpDims& d) { return (d.channels + kLanes - 1) / kLanes; }

// Backward for image b and channels [c0, c1) (c0 a multiple of kLanes), over
// the boxes of that image (box_list[0..num_listed)). Overwrites
// grad_features[b, :, :, c0:c1]: no other range writes there, so ranges run
// in parallel without atomics, and each element adds its contributions in
// the same order (box, cell, slot) however the channels are split. Writes
// the share of d loss / d (y1n, x1n, y2n, x2n) of box r from channel group
// g to box_partial[(r * ChannelGroups(d) + g) * 4 + j]; the caller sums the
// shares in a fixed order, so the result is deterministic.
inline void BackwardImageChannels(const float* grads, const float* features, const float* boxes,
                                  const uint8_t* argmax, const WarpDims& d, int64_t b,
                                  const int64_t* box_list, int64_t num_listed, int64_t c0,
                                  int64_t c1, float* grad_features, double* box_partial) {
  const int k = d.window(), slots = k * k;
  const int64_t P = d.pooled, H = d.height, W = d.width, C = d.channels;
  const int64_t groups = ChannelGroups(d), g0 = c0 / kLanes, g1 = (c1 + kLanes - 1) / kLanes;
  float* grad_image = grad_features + b * H * W * C;
  for (int64_t p = 0; p < H * W; ++p) {
    std::memset(grad_image + p * C + c0, 0, (c1 - c0) * sizeof(float));
  }
  const float* image = features + b * H * W * C;
  std::vector<AxisSample> ys(d.crop), xs(d.crop);
  std::vector<WindowSample> window(slots);
  // Per channel group: d loss / d (y1n, x1n, y2n, x2n), one lane per channel.
  std::vector<Vec> box_grad((g1 - g0) * 4);
  for (int64_t listed = 0; listed < num_listed; ++listed) {
    const int64_t r = box_list[listed];
    BoxAxes(boxes + 4 * r, d, ys.data(), xs.data());
    std::fill(box_grad.begin(), box_grad.end(), Vec{});
    for (int64_t py = 0; py < P; ++py) {
      for (int64_t px = 0; px < P; ++px) {
        WindowSamples(ys.data(), xs.data(), k, py, px, W, C, window.data());
        const int64_t cell = ((r * P + py) * P + px) * C;
        for (int64_t c = c0; c < c1; c += kLanes) {
          const int n = c1 - c < kLanes ? static_cast<int>(c1 - c) : kLanes;
          const Vec grad = LoadVec(grads + cell + c, n);
          ByteVec slot_bytes = {};
          std::memcpy(&slot_bytes, argmax + cell + c, n);
          const Vec slot_of_max = __builtin_convertvector(slot_bytes, Vec);
          Vec g_y1 = {}, g_x1 = {}, g_y2 = {}, g_x2 = {};
          for (int slot = 0; slot < slots; ++slot) {
            const WindowSample& s = window[slot];
            // Outside samples are the constant 0: no gradient to anything.
            if (!s.valid) continue;
            const Vec g = slot_of_max == static_cast<float>(slot) ? grad : Vec{};
            const float* at = image + c;
            float* grad_at = grad_image + c;
            const Vec tl = LoadVec(at + s.tl, n), tr = LoadVec(at + s.tr, n);
            const Vec bl = LoadVec(at + s.bl, n), br = LoadVec(at + s.br, n);
            // One complete read-modify-write per corner: corners that coincide
            // (a sample on a grid line) still add up correctly.
            const Vec g_top = g * (1.f - s.y_lerp), g_bottom = g * s.y_lerp;
            StoreVec(grad_at + s.tl, LoadVec(grad_at + s.tl, n) + g_top * (1.f - s.x_lerp), n);
            StoreVec(grad_at + s.tr, LoadVec(grad_at + s.tr, n) + g_top * s.x_lerp, n);
            StoreVec(grad_at + s.bl, LoadVec(grad_at + s.bl, n) + g_bottom * (1.f - s.x_lerp), n);
            StoreVec(grad_at + s.br, LoadVec(grad_at + s.br, n) + g_bottom * s.x_lerp, n);
            const Vec d_pos_y = g * BilinearGradY(tl, tr, bl, br, s.x_lerp);
            const Vec d_pos_x = g * BilinearGradX(tl, tr, bl, br, s.y_lerp);
            g_y1 += d_pos_y * s.d_y1n;
            g_y2 += d_pos_y * s.d_y2n;
            g_x1 += d_pos_x * s.d_x1n;
            g_x2 += d_pos_x * s.d_x2n;
          }
          Vec* acc = box_grad.data() + (c / kLanes - g0) * 4;
          acc[0] += g_y1;
          acc[1] += g_x1;
          acc[2] += g_y2;
          acc[3] += g_x2;
        }
      }
    }
    for (int64_t g = g0; g < g1; ++g) {
      for (int j = 0; j < 4; ++j) {
        const Vec& acc = box_grad[(g - g0) * 4 + j];
        double sum = 0.;
        for (int lane = 0; lane < kLanes; ++lane) sum += acc[lane];
        box_partial[(r * groups + g) * 4 + j] = sum;
      }
    }
  }
}

// d loss / d boxes [R, 4] (pixels) from the shares written by
// BackwardImageChannels, summed in a fixed order.
inline void ReduceBoxGrad(const double* box_partial, const WarpDims& d, float* grad_boxes) {
  const int64_t groups = ChannelGroups(d);
  float scale_y, scale_x;
  NormalizeGrad(d, &scale_y, &scale_x);
  for (int64_t r = 0; r < d.num_boxes; ++r) {
    for (int j = 0; j < 4; ++j) {
      double sum = 0.;
      for (int64_t g = 0; g < groups; ++g) sum += box_partial[(r * groups + g) * 4 + j];
      grad_boxes[r * 4 + j] = static_cast<float>(sum) * (j % 2 == 0 ? scale_y : scale_x);
    }
  }
}

}  // namespace mnc_roi_warp

#endif  // MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_CPU_H_
