// MncDecodeRle: COCO compressed RLE strings -> uint8 masks [K, H, W], each
// optionally mirrored left-right. The data pipeline's per-element mask work,
// done here so that it runs in parallel outside Python's GIL.
//
// Format (pycocotools rleToString / rleFrString): each run length is a
// little-endian sequence of 5-bit groups stored as characters 48 + group,
// bit 5 set while more groups follow, bit 4 of the last group the sign; from
// the third run on, a run is stored as its difference to the run two places
// before. Runs alternate 0s and 1s starting with 0s and walk the mask in
// column-major order (index = x * H + y).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

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
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Run lengths of one compressed string; an error names what is wrong.
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

// Fills out [H, W] (zeroed by the caller) from run lengths.
absl::Status Fill(const std::vector<int64_t>& counts, int64_t height, int64_t width, bool flip,
                  uint8_t* out) {
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
        uint8_t* dst = out + y0 * width + col;
        for (int64_t y = y0; y < y1; ++y, dst += width) *dst = 1;
        q += y1 - y0;
      }
    }
    pos = end;
  }
  return absl::OkStatus();
}

class DecodeRleOp : public OpKernel {
 public:
  explicit DecodeRleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& counts = ctx->input(0);
    const Tensor& height_t = ctx->input(1);
    const Tensor& width_t = ctx->input(2);
    const Tensor& flip_t = ctx->input(3);
    OP_REQUIRES(ctx, counts.dims() == 1,
                absl::InvalidArgumentError(absl::StrCat(
                    "counts must be a vector [K] of RLE strings, got shape ",
                    counts.shape().DebugString())));
    OP_REQUIRES(ctx,
                height_t.dims() == 0 && width_t.dims() == 0 && flip_t.dims() == 0,
                absl::InvalidArgumentError("height, width and flip must be scalars"));
    const int64_t height = height_t.scalar<int32_t>()();
    const int64_t width = width_t.scalar<int32_t>()();
    const bool flip = flip_t.scalar<bool>()();
    OP_REQUIRES(ctx, height >= 0 && width >= 0,
                absl::InvalidArgumentError(
                    absl::StrCat("height and width must be >= 0, got ", height, "x", width)));
    const int64_t k = counts.dim_size(0);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({k, height, width}), &output));
    if (output->NumElements() == 0) return;
    const auto strings = counts.flat<tstring>();
    uint8_t* out = output->flat<uint8_t>().data();
    const int64_t plane = height * width;
    std::vector<absl::Status> status(k);
    const auto& threads = *ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads.num_threads, threads.workers, k, plane,
                      [&](int64_t begin, int64_t end) {
                        std::vector<int64_t> runs;
                        for (int64_t i = begin; i < end; ++i) {
                          std::memset(out + i * plane, 0, plane);
                          status[i] = ParseCounts(strings(i), &runs);
                          if (status[i].ok()) {
                            status[i] = Fill(runs, height, width, flip, out + i * plane);
                          }
                        }
                      });
    for (int64_t i = 0; i < k; ++i) {
      OP_REQUIRES(ctx, status[i].ok(),
                  absl::InvalidArgumentError(
                      absl::StrCat("mask ", i, ": ", status[i].message())));
    }
  }
};

absl::Status DecodeRleShape(InferenceContext* c) {
  ShapeHandle counts, scalar;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &counts));
  for (int i = 1; i < 4; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 0, &scalar));
  tensorflow::shape_inference::DimensionHandle height, width;
  TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(1, &height));
  TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(2, &width));
  c->set_output(0, c->MakeShape({c->Dim(counts, 0), height, width}));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("MncDecodeRle")
    .Input("counts: string")
    .Input("height: int32")
    .Input("width: int32")
    .Input("flip: bool")
    .Output("masks: uint8")
    .SetShapeFn(DecodeRleShape)
    .Doc(R"doc(
COCO compressed RLE strings [K] -> uint8 masks [K, height, width] (row-major),
mirrored left-right when flip is true. An empty string is an all-zero mask.
)doc");

REGISTER_KERNEL_BUILDER(Name("MncDecodeRle").Device(tensorflow::DEVICE_CPU), DecodeRleOp);

}  // namespace mnc_rle
