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
// Feature storage: float, or 16-bit bfloat16 / float16 (Bfloat16Bits /
// HalfBits below: raw bit patterns, so this file needs no TensorFlow or Eigen
// types). 16-bit features and gradients are widened to float exactly on
// load, every sampling, pooling and gradient computation is the float code,
// and results are rounded to the storage type (to nearest even) only when
// stored; the feature gradient is accumulated in a float buffer. So the
// 16-bit op equals the float op on the widened inputs, rounded once.
//
// Channels are processed kLanes at a time in GCC/Clang vector types: for one
// output cell and one group of channels, the whole pooling window is reduced
// in registers, so the running max, its argmax and the routed gradient never
// go through memory, and no masked stores are needed. The forward has a
// branch-free path for the default 2x2 window (ForwardCell2x2): 3.4x faster
// than crop_and_resize + max_pool2d on 2 CPU cores vs 1.35x for the general
// loop (benchmarks/bench_roi_warp.py).
#ifndef MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_CPU_H_
#define MNC_CUSTOM_OPS_ROI_WARP_ROI_WARP_CPU_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "roi_warp_math.h"

namespace mnc_roi_warp {

constexpr int kLanes = 8;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef uint8_t ByteVec __attribute__((vector_size(kLanes)));

typedef int32_t IntVec __attribute__((vector_size(kLanes * sizeof(float))));
// Unaligned, aliasing view of kLanes floats: one vector move (a memcpy here
// made GCC bounce every load through the stack).
typedef float UnalignedVec __attribute__((vector_size(kLanes * sizeof(float)), aligned(4),
                                          may_alias));

// Loads / stores of n <= kLanes channels; lanes past n read as 0. The
// full-width case is a single unaligned vector move.
inline Vec LoadVec(const float* p, int n) {
  Vec v = {};
  if (__builtin_expect(n == kLanes, 1)) {
    v = *reinterpret_cast<const UnalignedVec*>(p);
  } else {
    for (int i = 0; i < n; ++i) v[i] = p[i];
  }
  return v;
}
inline void StoreVec(float* p, Vec v, int n) {
  if (__builtin_expect(n == kLanes, 1)) {
    *reinterpret_cast<UnalignedVec*>(p) = v;
  } else {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
}

// 16-bit feature storage types (bit patterns; layout-compatible with
// Eigen::bfloat16 / Eigen::half, which the TF kernels reinterpret).
struct Bfloat16Bits {
  uint16_t bits;
};
struct HalfBits {
  uint16_t bits;
};
static_assert(sizeof(Bfloat16Bits) == 2 && sizeof(HalfBits) == 2, "16-bit storage types");

typedef uint16_t U16Vec __attribute__((vector_size(kLanes * sizeof(uint16_t))));
typedef uint16_t UnalignedU16Vec __attribute__((vector_size(kLanes * sizeof(uint16_t)), aligned(2),
                                                may_alias));
typedef uint32_t UIntVec __attribute__((vector_size(kLanes * sizeof(uint32_t))));

inline U16Vec LoadBits(const uint16_t* p, int n) {
  U16Vec h = {};
  if (__builtin_expect(n == kLanes, 1)) {
    h = *reinterpret_cast<const UnalignedU16Vec*>(p);
  } else {
    for (int i = 0; i < n; ++i) h[i] = p[i];
  }
  return h;
}
inline void StoreBits(uint16_t* p, U16Vec h, int n) {
  if (__builtin_expect(n == kLanes, 1)) {
    *reinterpret_cast<UnalignedU16Vec*>(p) = h;
  } else {
    for (int i = 0; i < n; ++i) p[i] = h[i];
  }
}

// bfloat16 is the high half of a float: widening puts its bits above 16 zero
// bits. (With AVX but no AVX2 the generic vector code is split into scalar
// work by GCC; the SSE intrinsics keep it at a few instructions.)
inline Vec LoadVec(const Bfloat16Bits* p, int n) {
#if defined(__AVX__)
  U16Vec h = LoadBits(&p->bits, n);
  const __m128i x = reinterpret_cast<__m128i>(h);
  const __m128i zero = _mm_setzero_si128();
  const __m256i u = _mm256_set_m128i(_mm_unpackhi_epi16(zero, x), _mm_unpacklo_epi16(zero, x));
  return reinterpret_cast<Vec>(_mm256_castsi256_ps(u));
#else
  const UIntVec u = __builtin_convertvector(LoadBits(&p->bits, n), UIntVec) << 16;
  return reinterpret_cast<Vec>(u);
#endif
}
// Round to nearest even (Eigen's / TensorFlow's cast); NaN stays a quiet NaN.
#if defined(__AVX__)
inline __m128i RoundToBfloat16(__m128i u) {
  const __m128i odd = _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1));
  const __m128i rounded =
      _mm_srli_epi32(_mm_add_epi32(u, _mm_add_epi32(_mm_set1_epi32(0x7fff), odd)), 16);
  const __m128i quiet_nan = _mm_or_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(0x40));
  const __m128i is_nan = _mm_cmpgt_epi32(_mm_and_si128(u, _mm_set1_epi32(0x7fffffff)),
                                         _mm_set1_epi32(0x7f800000));
  return _mm_blendv_epi8(rounded, quiet_nan, is_nan);
}
#endif
inline void StoreVec(Bfloat16Bits* p, Vec v, int n) {
#if defined(__AVX__)
  const __m256i u = _mm256_castps_si256(reinterpret_cast<__m256>(v));
  const __m128i lo = RoundToBfloat16(_mm256_castsi256_si128(u));
  const __m128i hi = RoundToBfloat16(_mm256_extractf128_si256(u, 1));
  StoreBits(&p->bits, reinterpret_cast<U16Vec>(_mm_packus_epi32(lo, hi)), n);
#else
  const UIntVec u = reinterpret_cast<UIntVec>(v);
  const UIntVec rounded = (u + (0x7fffu + ((u >> 16) & 1u))) >> 16;
  const UIntVec quiet_nan = (u >> 16) | 0x40u;
  const UIntVec bits = (u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
  StoreBits(&p->bits, __builtin_convertvector(bits, U16Vec), n);
#endif
}

// IEEE float16 <-> float, scalar and exact (F. Giesen's conversions; subnormals,
// infinities and NaN included; float -> half rounds to nearest even).
inline float HalfToFloat(uint16_t h) {
  const uint32_t shifted_exp = 0x7c00u << 13;
  uint32_t o = (h & 0x7fffu) << 13;
  const uint32_t exp = shifted_exp & o;
  o += (127u - 15u) << 23;
  float f;
  if (exp == shifted_exp) {
    o += (128u - 16u) << 23;  // Inf / NaN
    std::memcpy(&f, &o, 4);
  } else if (exp == 0) {
    o += 1u << 23;  // zero / subnormal: renormalise through float arithmetic
    std::memcpy(&f, &o, 4);
    const uint32_t magic_bits = 113u << 23;
    float magic;
    std::memcpy(&magic, &magic_bits, 4);
    f -= magic;
  } else {
    std::memcpy(&f, &o, 4);
  }
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits |= static_cast<uint32_t>(h & 0x8000u) << 16;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint16_t FloatToHalf(float value) {
  uint32_t f;
  std::memcpy(&f, &value, 4);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  uint32_t o;
  if (f >= (143u << 23)) {  // overflow to Inf, or Inf / NaN
    o = f > (255u << 23) ? 0x7e00u : 0x7c00u;
  } else if (f < (113u << 23)) {  // subnormal half (or zero)
    const uint32_t magic_bits = 126u << 23;
    float magic, x;
    std::memcpy(&magic, &magic_bits, 4);
    std::memcpy(&x, &f, 4);
    x += magic;
    std::memcpy(&o, &x, 4);
    o -= magic_bits;
  } else {
    const uint32_t mant_odd = (f >> 13) & 1u;
    f += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
    f += mant_odd;
    o = f >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}
inline Vec LoadVec(const HalfBits* p, int n) {
  Vec v = {};
  for (int i = 0; i < n; ++i) v[i] = HalfToFloat(p[i].bits);
  return v;
}
inline void StoreVec(HalfBits* p, Vec v, int n) {
  for (int i = 0; i < n; ++i) p[i].bits = FloatToHalf(v[i]);
}

// Converts n values between storage types (16-bit <-> float), kLanes at a time.
template <typename TSrc, typename TDst>
inline void ConvertValues(const TSrc* src, int64_t n, TDst* dst) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) StoreVec(dst + i, LoadVec(src + i, kLanes), kLanes);
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    StoreVec(dst + i, LoadVec(src + i, rest), rest);
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

// Corner pointers and broadcast weights of one pooling-window sample for the
// forward; samples outside the map point at a row of zeros.
template <typename T>
struct SamplePtrs {
  const T* tl;
  const T* tr;
  const T* bl;
  const T* br;
  Vec y_lerp;
  Vec x_lerp;
};

inline Vec BilinearVec(Vec tl, Vec tr, Vec bl, Vec br, Vec y_lerp, Vec x_lerp) {
  const Vec top = tl + (tr - tl) * x_lerp;
  const Vec bottom = bl + (br - bl) * x_lerp;
  return top + (bottom - top) * y_lerp;
}

// Window slots (small whole numbers held as floats) -> n bytes.
inline void StoreSlots(uint8_t* p, Vec slots, int n) {
#if defined(__AVX__)
  if (__builtin_expect(n == kLanes, 1)) {
    const __m256i i32 = _mm256_cvttps_epi32(reinterpret_cast<__m256>(slots));
    const __m128i i16 = _mm_packus_epi32(_mm256_castsi256_si128(i32),
                                         _mm256_extractf128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(i16, i16));
    return;
  }
#endif
  const ByteVec bytes = __builtin_convertvector(slots, ByteVec);
  std::memcpy(p, &bytes, n);
}

// Channels [c, c + n) of one output cell of any window size: max over the
// window's samples and the slot of the first maximum. kN > 0 fixes n.
template <int kN, typename T, typename TOut>
inline void ForwardCellLanes(const SamplePtrs<T>* win, int slots, int64_t c, int n, TOut* out,
                             uint8_t* arg) {
  const int lanes = kN > 0 ? kN : n;
  Vec best = {}, best_slot = {};
  for (int slot = 0; slot < slots; ++slot) {
    const SamplePtrs<T>& s = win[slot];
    const Vec v = BilinearVec(LoadVec(s.tl + c, lanes), LoadVec(s.tr + c, lanes),
                              LoadVec(s.bl + c, lanes), LoadVec(s.br + c, lanes), s.y_lerp,
                              s.x_lerp);
    if (slot == 0) {
      best = v;
    } else {
      const auto take = v > best;
      best = take ? v : best;
      best_slot = take ? Vec{} + static_cast<float>(slot) : best_slot;
    }
  }
  StoreVec(out + c, best, lanes);
  StoreSlots(arg + c, best_slot, lanes);
}

template <typename T, typename TOut>
inline void ForwardCell(const SamplePtrs<T>* win, int slots, int64_t C, TOut* out, uint8_t* arg) {
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    ForwardCellLanes<kLanes>(win, slots, c, kLanes, out, arg);
  }
  if (c < C) ForwardCellLanes<0>(win, slots, c, static_cast<int>(C - c), out, arg);
}

// 2x2 pooling windows (the default 28 -> 14), written so that the 16 corner
// loads per channel group address through 4 row pointers and 4 column
// offsets (no register spills). Samples outside the map read pixel 0 and are
// zeroed by an all-zero mask (kMasked), so no branch remains in the loop.
template <bool kMasked, int kN, typename T, typename TOut>
inline void ForwardCell2x2Lanes(const T* const rows[2][2], const int64_t cols[2][2],
                                const Vec y_lerp[2], const Vec x_lerp[2], const Vec mask[4],
                                int64_t c, int n, TOut* out, uint8_t* arg) {
  const int lanes = kN > 0 ? kN : n;
  Vec v[4];
  for (int a = 0; a < 2; ++a) {
    const T* top = rows[a][0] + c;
    const T* bottom = rows[a][1] + c;
    for (int b = 0; b < 2; ++b) {
      v[a * 2 + b] = BilinearVec(LoadVec(top + cols[b][0], lanes), LoadVec(top + cols[b][1], lanes),
                                 LoadVec(bottom + cols[b][0], lanes),
                                 LoadVec(bottom + cols[b][1], lanes), y_lerp[a], x_lerp[b]);
      if (kMasked) {
        v[a * 2 + b] = reinterpret_cast<Vec>(reinterpret_cast<IntVec>(v[a * 2 + b]) &
                                             reinterpret_cast<IntVec>(mask[a * 2 + b]));
      }
    }
  }
  Vec best = v[0], best_slot = {};
  for (int slot = 1; slot < 4; ++slot) {
    const auto take = v[slot] > best;
    best = take ? v[slot] : best;
    best_slot = take ? Vec{} + static_cast<float>(slot) : best_slot;
  }
  StoreVec(out + c, best, lanes);
  StoreSlots(arg + c, best_slot, lanes);
}

template <bool kMasked, typename T, typename TOut>
inline void ForwardCell2x2(const T* image, const AxisSample* ay, const AxisSample* ax, int64_t W,
                           int64_t C, TOut* out, uint8_t* arg) {
  const T* rows[2][2];
  int64_t cols[2][2];
  Vec y_lerp[2], x_lerp[2], mask[4];
  for (int a = 0; a < 2; ++a) {
    rows[a][0] = image + ay[a].lo * W * C;
    rows[a][1] = image + ay[a].hi * W * C;
    cols[a][0] = ax[a].lo * C;
    cols[a][1] = ax[a].hi * C;
    y_lerp[a] = Vec{} + ay[a].lerp;
    x_lerp[a] = Vec{} + ax[a].lerp;
  }
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      const IntVec bits = IntVec{} + ((ay[a].valid && ax[b].valid) ? -1 : 0);
      mask[a * 2 + b] = reinterpret_cast<Vec>(bits);
    }
  }
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    ForwardCell2x2Lanes<kMasked, kLanes>(rows, cols, y_lerp, x_lerp, mask, c, kLanes, out, arg);
  }
  if (c < C) {
    ForwardCell2x2Lanes<kMasked, 0>(rows, cols, y_lerp, x_lerp, mask, c, static_cast<int>(C - c),
                                    out, arg);
  }
}

// Forward for boxes [begin, end): warp, pool, and record the window slot of
// each max. Slot 0 initialises and later slots replace only on strictly
// greater values, so ties keep the first slot in row-major order, as
// max_pool2d does. Samples outside the map have value 0.
// T: the features' storage type, TOut: the output's (16-bit features are read
// fastest widened to a float copy first: TF kernel, T = float, TOut = 16-bit).
template <typename T, typename TOut>
inline void ForwardBoxes(const T* features, const float* boxes, const int32_t* box_indices,
                         const WarpDims& d, int64_t begin, int64_t end, TOut* output,
                         uint8_t* argmax) {
  const int k = d.window(), slots = k * k;
  const int64_t P = d.pooled, W = d.width, C = d.channels;
  std::vector<AxisSample> ys(d.crop), xs(d.crop);
  std::vector<SamplePtrs<T>> window(slots);
  const std::vector<T> zeros(C, T{});  // all-zero bits: 0.0 in every storage type
  for (int64_t r = begin; r < end; ++r) {
    BoxAxes(boxes + 4 * r, d, ys.data(), xs.data());
    const T* image = features + box_indices[r] * d.height * W * C;
    for (int64_t py = 0; py < P; ++py) {
      for (int64_t px = 0; px < P; ++px) {
        const int64_t cell = ((r * P + py) * P + px) * C;
        if (k == 2) {
          const AxisSample* ay = ys.data() + py * 2;
          const AxisSample* ax = xs.data() + px * 2;
          if (ay[0].valid && ay[1].valid && ax[0].valid && ax[1].valid) {
            ForwardCell2x2<false>(image, ay, ax, W, C, output + cell, argmax + cell);
          } else {
            ForwardCell2x2<true>(image, ay, ax, W, C, output + cell, argmax + cell);
          }
          continue;
        }
        for (int wy = 0; wy < k; ++wy) {
          const AxisSample& ay = ys[py * k + wy];
          for (int wx = 0; wx < k; ++wx) {
            const AxisSample& ax = xs[px * k + wx];
            SamplePtrs<T>& s = window[wy * k + wx];
            if (ay.valid && ax.valid) {
              s.tl = image + (ay.lo * W + ax.lo) * C;
              s.tr = image + (ay.lo * W + ax.hi) * C;
              s.bl = image + (ay.hi * W + ax.lo) * C;
              s.br = image + (ay.hi * W + ax.hi) * C;
              s.y_lerp = Vec{} + ay.lerp;
              s.x_lerp = Vec{} + ax.lerp;
            } else {
              s.tl = s.tr = s.bl = s.br = zeros.data();
              s.y_lerp = s.x_lerp = Vec{};
            }
          }
        }
        ForwardCell(window.data(), slots, C, output + cell, argmax + cell);
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
template <typename TGrad, typename T>
inline void BackwardImageChannels(const TGrad* grads, const T* features, const float* boxes,
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
  const T* image = features + b * H * W * C;
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
            const T* at = image + c;
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
