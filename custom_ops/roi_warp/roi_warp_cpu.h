// CPU loops of RoI warping on raw NHWC pointers. No TensorFlow dependency:
// the TF kernel (roi_warp_kernels.cc) splits the work into the ranges these
// functions take and runs them on the device thread pool; the standalone
// CUDA check runs the same functions serially as its CPU reference.
//
// Layout (row-major): features [B, H, W, C], boxes [R, 4] (y1, x1, y2, x2 in
// input-image pixels), box_indices [R], output / argmax [R, P, P, C] with
// P = pooled, grad_features [B, H, W, C]. The channel axis is innermost in
// every inner loop, so each sample touches contiguous C-vectors.
#ifndef MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_CPU_H_
#define MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_CPU_H_

#include <cstdint>
#include <vector>

#include "roi_warp_math.h"

namespace mnc_roi_warp {

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

// Folds one sample of a pooling window into the running max over channels.
// Window slot 0 initialises; later slots replace on strictly greater values,
// so ties keep the first slot in row-major order, as max_pool2d does.
inline void MaxSample(const float* __restrict tl, const float* __restrict tr,
                      const float* __restrict bl, const float* __restrict br, float y_lerp,
                      float x_lerp, int slot, int64_t channels, float* __restrict out,
                      float* __restrict slot_of_max) {
  if (slot == 0) {
    for (int64_t c = 0; c < channels; ++c) {
      out[c] = Bilinear(tl[c], tr[c], bl[c], br[c], y_lerp, x_lerp);
      slot_of_max[c] = 0.f;
    }
    return;
  }
  const float slot_f = static_cast<float>(slot);
  for (int64_t c = 0; c < channels; ++c) {
    const float v = Bilinear(tl[c], tr[c], bl[c], br[c], y_lerp, x_lerp);
    const bool take = v > out[c];
    out[c] = take ? v : out[c];
    slot_of_max[c] = take ? slot_f : slot_of_max[c];
  }
}

// Same as MaxSample for a sample outside the feature map (value 0).
inline void MaxZero(int slot, int64_t channels, float* __restrict out,
                    float* __restrict slot_of_max) {
  const float slot_f = static_cast<float>(slot);
  for (int64_t c = 0; c < channels; ++c) {
    const bool take = slot == 0 || 0.f > out[c];
    out[c] = take ? 0.f : out[c];
    slot_of_max[c] = take ? slot_f : slot_of_max[c];
  }
}

// Forward for boxes [begin, end): warp, pool, and record the window slot of
// each max (argmax = wy * window + wx).
inline void ForwardBoxes(const float* features, const float* boxes, const int32_t* box_indices,
                         const WarpDims& d, int64_t begin, int64_t end, float* output,
                         uint8_t* argmax) {
  const int k = d.window();
  const int64_t P = d.pooled, W = d.width, C = d.channels;
  std::vector<AxisSample> ys(d.crop), xs(d.crop);
  std::vector<float> slot_of_max(C);
  for (int64_t r = begin; r < end; ++r) {
    BoxAxes(boxes + 4 * r, d, ys.data(), xs.data());
    const float* image = features + box_indices[r] * d.height * W * C;
    for (int64_t py = 0; py < P; ++py) {
      for (int64_t px = 0; px < P; ++px) {
        const int64_t cell = ((r * P + py) * P + px) * C;
        float* out = output + cell;
        for (int wy = 0; wy < k; ++wy) {
          const AxisSample& ay = ys[py * k + wy];
          for (int wx = 0; wx < k; ++wx) {
            const AxisSample& ax = xs[px * k + wx];
            const int slot = wy * k + wx;
            if (!(ay.valid && ax.valid)) {
              MaxZero(slot, C, out, slot_of_max.data());
              continue;
            }
            const float* top = image + ay.lo * W * C;
            const float* bottom = image + ay.hi * W * C;
            MaxSample(top + ax.lo * C, top + ax.hi * C, bottom + ax.lo * C, bottom + ax.hi * C,
                      ay.lerp, ax.lerp, slot, C, out, slot_of_max.data());
          }
        }
        uint8_t* arg = argmax + cell;
        for (int64_t c = 0; c < C; ++c) arg[c] = static_cast<uint8_t>(slot_of_max[c]);
      }
    }
  }
}

// Backward of one sample for channels [0, n): scatters the routed gradient
// into the four corners and returns, summed over channels, the gradient
// w.r.t. the sample position along y and x.
inline void BackwardSample(const float* __restrict grad, const uint8_t* __restrict arg, int slot,
                           int64_t n, const float* __restrict tl, const float* __restrict tr,
                           const float* __restrict bl, const float* __restrict br, float y_lerp,
                           float x_lerp, float* gtl, float* gtr, float* gbl, float* gbr,
                           float* d_pos_y, float* d_pos_x) {
  const float w_tl = (1.f - y_lerp) * (1.f - x_lerp), w_tr = (1.f - y_lerp) * x_lerp;
  const float w_bl = y_lerp * (1.f - x_lerp), w_br = y_lerp * x_lerp;
  const uint8_t slot_u8 = static_cast<uint8_t>(slot);
  float sum_y = 0.f, sum_x = 0.f;
  // The corner pointers may coincide (a sample on a grid line): each
  // statement is a complete read-modify-write, so that stays correct.
#pragma omp simd reduction(+ : sum_y, sum_x)
  for (int64_t c = 0; c < n; ++c) {
    const float g = arg[c] == slot_u8 ? grad[c] : 0.f;
    gtl[c] += g * w_tl;
    gtr[c] += g * w_tr;
    gbl[c] += g * w_bl;
    gbr[c] += g * w_br;
    sum_y += g * BilinearGradY(tl[c], tr[c], bl[c], br[c], x_lerp);
    sum_x += g * BilinearGradX(tl[c], tr[c], bl[c], br[c], y_lerp);
  }
  *d_pos_y = sum_y;
  *d_pos_x = sum_x;
}

// Backward for image b and channels [c0, c1), over the boxes of that image
// (box_list[0..num_listed)). Overwrites grad_features[b, :, :, c0:c1] (no
// other range writes there, so ranges run in parallel without atomics) and
// writes this channel range's share of d loss / d (y1n, x1n, y2n, x2n) of
// each listed box into box_partial[r * 4 + j]. The caller sums the shares of
// all channel ranges in a fixed order, which keeps the result deterministic.
inline void BackwardImageChannels(const float* grads, const float* features, const float* boxes,
                                  const uint8_t* argmax, const WarpDims& d, int64_t b,
                                  const int64_t* box_list, int64_t num_listed, int64_t c0,
                                  int64_t c1, float* grad_features, double* box_partial) {
  const int k = d.window();
  const int64_t P = d.pooled, H = d.height, W = d.width, C = d.channels, n = c1 - c0;
  float* grad_image = grad_features + b * H * W * C;
  for (int64_t p = 0; p < H * W; ++p) {
    for (int64_t c = c0; c < c1; ++c) grad_image[p * C + c] = 0.f;
  }
  const float* image = features + b * H * W * C;
  std::vector<AxisSample> ys(d.crop), xs(d.crop);
  for (int64_t listed = 0; listed < num_listed; ++listed) {
    const int64_t r = box_list[listed];
    BoxAxes(boxes + 4 * r, d, ys.data(), xs.data());
    double g_y1 = 0., g_x1 = 0., g_y2 = 0., g_x2 = 0.;
    for (int64_t py = 0; py < P; ++py) {
      for (int64_t px = 0; px < P; ++px) {
        const int64_t cell = ((r * P + py) * P + px) * C + c0;
        for (int wy = 0; wy < k; ++wy) {
          const AxisSample& ay = ys[py * k + wy];
          if (!ay.valid) continue;  // outside samples are constant 0: no gradient
          for (int wx = 0; wx < k; ++wx) {
            const AxisSample& ax = xs[px * k + wx];
            if (!ax.valid) continue;
            const int64_t top = ay.lo * W * C + c0, bottom = ay.hi * W * C + c0;
            const int64_t left = ax.lo * C, right = ax.hi * C;
            float d_pos_y, d_pos_x;
            BackwardSample(grads + cell, argmax + cell, wy * k + wx, n, image + top + left,
                           image + top + right, image + bottom + left, image + bottom + right,
                           ay.lerp, ax.lerp, grad_image + top + left, grad_image + top + right,
                           grad_image + bottom + left, grad_image + bottom + right, &d_pos_y,
                           &d_pos_x);
            g_y1 += static_cast<double>(d_pos_y) * ay.d_c1n;
            g_y2 += static_cast<double>(d_pos_y) * ay.d_c2n;
            g_x1 += static_cast<double>(d_pos_x) * ax.d_c1n;
            g_x2 += static_cast<double>(d_pos_x) * ax.d_c2n;
          }
        }
      }
    }
    box_partial[r * 4 + 0] = g_y1;
    box_partial[r * 4 + 1] = g_x1;
    box_partial[r * 4 + 2] = g_y2;
    box_partial[r * 4 + 3] = g_x2;
  }
}

}  // namespace mnc_roi_warp

#endif  // MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_CPU_H_
