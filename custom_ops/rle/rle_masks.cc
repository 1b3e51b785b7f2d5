// MncRasterizeMasks: a batch of COCO compressed RLE strings -> the padded uint8
// instance masks of the data pipeline's contract, [B, N, Hp, Wp], in one pass.
//
// For mask (b, n): decode counts[b, n] at source_size[b] = (H, W), mirror it
// left-right if flip[b], resize it to target_size[b] = (h, w) exactly as
//   tf.image.resize(mask, (h, w), "bilinear") >= 0.5
// computes it (half-pixel centres, no antialiasing; the same float operations
// in the same order as TensorFlow's CPU ResizeBilinear kernel, so the result
// is bit-identical), and write it into the top-left corner of a zeroed
// Hp x Wp plane. An empty string is an all-zero mask (the padding rows).
//
// Why one batched op: the pipeline used to rasterise each element's masks at
// its own size, resize them in float32 and let padded_batch zero-fill and copy
// them into the batch; here each mask goes from its string straight into its
// plane of the output (zeroed, then its 1s written), with no tensor in between.
//
// RLE format (pycocotools rleToString / rleFrString): each run length is a
// little-endian sequence of 5-bit groups stored as characters 48 + group,
// bit 5 set while more groups follow, bit 4 of the last group the sign; from
// the third run on, a run is stored as its difference to the run two places
// before. Runs alternate 0s and 1s starting with 0s and walk the mask in
// column-major order (index = x * H + y).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace mnc_rle {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::tstring;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Run lengths of one compressed string; an error says what is wrong.
absl::Status ParseCounts(const tstring& s, std::vector<int64_t>* counts) {
  counts->clear();
  size_t p = 0;
  const size_t n = s.size();
  while (p < n) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    int c = 0;
    while (more) {
      if (p >= n) return absl::InvalidArgumentError("truncated RLE string");
      c = static_cast<unsigned char>(s[p]) - 48;
      if (c < 0 || c > 63) {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid character in RLE string at offset ", p));
      }
      if (k >= 12) return absl::InvalidArgumentError("RLE run length out of range");
      x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
    }
    if (c & 0x10) x |= -(int64_t{1} << (5 * k));
    if (counts->size() > 2) x += (*counts)[counts->size() - 2];
    counts->push_back(x);
  }
  return absl::OkStatus();
}

// Sets the 1-runs of `counts` (an H x W mask, column-major runs) in `out`, rows
// `stride` bytes apart, mirrored left-right if `flip`. `out` is zeroed by the
// caller.
absl::Status Fill(const std::vector<int64_t>& counts, int64_t height, int64_t width, bool flip,
                  int64_t stride, uint8_t* out) {
  int64_t total = 0;
  for (int64_t c : counts) {
    if (c < 0) return absl::InvalidArgumentError("negative RLE run length");
    total += c;
  }
  if (!counts.empty() && total != height * width) {
    return absl::InvalidArgumentError(absl::StrCat("RLE runs cover ", total, " pixels, not ",
                                                   height, "x", width, " = ", height * width));
  }
  int64_t pos = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const int64_t end = pos + counts[i];
    if (i % 2 == 1) {  // a run of 1s: column-major [pos, end)
      for (int64_t q = pos; q < end;) {
        const int64_t x = q / height, y0 = q % height;
        const int64_t y1 = std::min(height, y0 + (end - q));
        const int64_t col = flip ? width - 1 - x : x;
        uint8_t* dst = out + y0 * stride + col;
        for (int64_t y = y0; y < y1; ++y, dst += stride) *dst = 1;
        q += y1 - y0;
      }
    }
    pos = end;
  }
  return absl::OkStatus();
}

// One output coordinate's bilinear sample, as TensorFlow's ResizeBilinear
// (half_pixel_centers=True) caches it: in = (i + 0.5) * (in_size / out_size) - 0.5.
struct Tap {
  int64_t lower, upper;
  float lerp;
};

std::vector<Tap> Taps(int64_t out_size, int64_t in_size) {
  std::vector<Tap> taps(out_size);
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  for (int64_t i = 0; i < out_size; ++i) {
    const float in = (static_cast<float>(i) + 0.5f) * scale - 0.5f;
    const float in_f = std::floor(in);
    taps[i].lower = std::max(static_cast<int64_t>(in_f), int64_t{0});
    taps[i].upper = std::min(static_cast<int64_t>(std::ceil(in)), in_size - 1);
    taps[i].lerp = in - in_f;
  }
  return taps;
}

// out[y * stride + x] = bilinear(src)(y, x) >= 0.5 for y < h, x < w; src is
// H x W of 0/1. Where the four taps agree the sample equals them exactly (the
// lerps add zeros), which is most of a mask; elsewhere TensorFlow's arithmetic.
void Resize(const uint8_t* src, int64_t src_w, const std::vector<Tap>& ys,
            const std::vector<Tap>& xs, int64_t stride, uint8_t* out) {
  const int64_t w = static_cast<int64_t>(xs.size());
  for (size_t y = 0; y < ys.size(); ++y, out += stride) {
    const uint8_t* top = src + ys[y].lower * src_w;
    const uint8_t* bottom = src + ys[y].upper * src_w;
    const float y_lerp = ys[y].lerp;
    for (int64_t x = 0; x < w; ++x) {
      const Tap& t = xs[x];
      const uint8_t a = top[t.lower], b = top[t.upper], c = bottom[t.lower], d = bottom[t.upper];
      if ((a & b & c & d) | !(a | b | c | d)) {
        out[x] = a;
        continue;
      }
      const float tl = a, tr = b, bl = c, br = d;
      const float top_v = tl + (tr - tl) * t.lerp;
      const float bottom_v = bl + (br - bl) * t.lerp;
      out[x] = (top_v + (bottom_v - top_v) * y_lerp) >= 0.5f ? 1 : 0;
    }
  }
}

// Zeroes a padding plane (an empty string: most planes of a batch padded to
// max_instances) with streaming stores: nothing reads it back soon, and skipping
// the cache spares the read-for-ownership of every line (glibc's memset only
// streams far larger blocks).
void ZeroPlane(uint8_t* dst, int64_t size) {
#if defined(__SSE2__)
  const int64_t head = std::min<int64_t>(size, (16 - reinterpret_cast<uintptr_t>(dst) % 16) % 16);
  std::memset(dst, 0, head);
  int64_t i = head;
  const __m128i zero = _mm_setzero_si128();
  for (; i + 64 <= size; i += 64) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), zero);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), zero);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), zero);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), zero);
  }
  std::memset(dst + i, 0, size - i);
#else
  std::memset(dst, 0, size);
#endif
}

absl::Status CheckSizes(const Tensor& t, const char* name, int64_t batch) {
  if (t.dims() != 2 || t.dim_size(0) != batch || t.dim_size(1) != 2) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be int32 [B, 2] = [", batch,
                                                   ", 2] (height, width), got shape ",
                                                   t.shape().DebugString()));
  }
  return absl::OkStatus();
}

class RasterizeMasksOp : public OpKernel {
 public:
  explicit RasterizeMasksOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& counts = ctx->input(0);
    const Tensor& source_t = ctx->input(1);
    const Tensor& target_t = ctx->input(2);
    const Tensor& flip_t = ctx->input(3);
    const Tensor& padded_t = ctx->input(4);
    OP_REQUIRES(ctx, counts.dims() == 2,
                absl::InvalidArgumentError(absl::StrCat(
                    "counts must be [B, N] RLE strings, got shape ",
                    counts.shape().DebugString())));
    const int64_t batch = counts.dim_size(0), n = counts.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckSizes(source_t, "source_size", batch));
    OP_REQUIRES_OK(ctx, CheckSizes(target_t, "target_size", batch));
    OP_REQUIRES(ctx, flip_t.dims() == 1 && flip_t.dim_size(0) == batch,
                absl::InvalidArgumentError(absl::StrCat("flip must be bool [B] = [", batch,
                                                        "], got shape ",
                                                        flip_t.shape().DebugString())));
    OP_REQUIRES(ctx, padded_t.dims() == 1 && padded_t.dim_size(0) == 2,
                absl::InvalidArgumentError(absl::StrCat(
                    "padded_size must be int32 [2] (height, width), got shape ",
                    padded_t.shape().DebugString())));
    const auto source = source_t.matrix<int32_t>();
    const auto target = target_t.matrix<int32_t>();
    const auto flip = flip_t.vec<bool>();
    const int64_t hp = padded_t.vec<int32_t>()(0), wp = padded_t.vec<int32_t>()(1);
    OP_REQUIRES(ctx, hp >= 0 && wp >= 0,
                absl::InvalidArgumentError(
                    absl::StrCat("padded_size must be >= 0, got (", hp, ", ", wp, ")")));
    for (int64_t b = 0; b < batch; ++b) {
      OP_REQUIRES(ctx, source(b, 0) >= 0 && source(b, 1) >= 0,
                  absl::InvalidArgumentError(absl::StrCat("source_size[", b, "] must be >= 0, got (",
                                                          source(b, 0), ", ", source(b, 1), ")")));
      OP_REQUIRES(ctx,
                  target(b, 0) >= 0 && target(b, 1) >= 0 && target(b, 0) <= hp &&
                      target(b, 1) <= wp,
                  absl::InvalidArgumentError(absl::StrCat(
                      "target_size[", b, "] must lie in [0, padded_size] = [0, (", hp, ", ", wp,
                      ")], got (", target(b, 0), ", ", target(b, 1), ")")));
    }
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, n, hp, wp}), &output));
    if (output->NumElements() == 0) return;
    const auto strings = counts.matrix<tstring>();
    uint8_t* out = output->flat<uint8_t>().data();
    const int64_t plane = hp * wp;
    std::vector<absl::Status> status(batch * n);
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<int64_t> runs;
      std::vector<uint8_t> scratch;
      std::vector<Tap> ys, xs;
      int64_t taps_for = -1;  // the image whose taps ys / xs hold
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / n;
        uint8_t* dst = out + i * plane;
        const tstring& s = strings(b, i % n);
        if (s.empty()) {
          ZeroPlane(dst, plane);
          continue;
        }
        std::memset(dst, 0, plane);
        const int64_t sh = source(b, 0), sw = source(b, 1);
        const int64_t th = target(b, 0), tw = target(b, 1);
        status[i] = ParseCounts(s, &runs);
        if (!status[i].ok()) continue;
        if (sh == th && sw == tw) {
          status[i] = Fill(runs, sh, sw, flip(b), wp, dst);
          continue;
        }
        scratch.assign(sh * sw, 0);
        status[i] = Fill(runs, sh, sw, flip(b), sw, scratch.data());
        if (!status[i].ok() || th == 0 || tw == 0) continue;
        if (taps_for != b) {
          ys = Taps(th, sh);
          xs = Taps(tw, sw);
          taps_for = b;
        }
        Resize(scratch.data(), sw, ys, xs, wp, dst);
      }
    };
    const auto& threads = *ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads.num_threads, threads.workers, batch * n, plane, work);
#if defined(__SSE2__)
    _mm_sfence();  // streaming stores are weakly ordered: make them visible to readers
#endif
    for (int64_t i = 0; i < batch * n; ++i) {
      OP_REQUIRES(ctx, status[i].ok(),
                  absl::InvalidArgumentError(absl::StrCat("counts[", i / n, ", ", i % n,
                                                          "]: ", status[i].message())));
    }
  }
};

absl::Status RasterizeMasksShape(InferenceContext* c) {
  ShapeHandle counts, sizes, vec, padded;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &counts));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &sizes));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &sizes));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &vec));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 1, &vec));
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(4, &padded));
  TF_RETURN_IF_ERROR(c->WithRank(padded, 2, &padded));
  ShapeHandle out;
  TF_RETURN_IF_ERROR(c->Concatenate(counts, padded, &out));
  c->set_output(0, out);
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("MncRasterizeMasks")
    .Input("counts: string")
    .Input("source_size: int32")
    .Input("target_size: int32")
    .Input("flip: bool")
    .Input("padded_size: int32")
    .Output("masks: uint8")
    .SetShapeFn(RasterizeMasksShape)
    .Doc(R"doc(
COCO compressed RLE strings [B, N] -> uint8 masks [B, N, Hp, Wp]: mask (b, n)
decoded at source_size[b], mirrored left-right if flip[b], resized to
target_size[b] like tf.image.resize(bilinear) >= 0.5, zero-padded to
padded_size. An empty string is an all-zero mask.
)doc");

REGISTER_KERNEL_BUILDER(Name("MncRasterizeMasks").Device(tensorflow::DEVICE_CPU),
                        RasterizeMasksOp);

}  // namespace mnc_rle
