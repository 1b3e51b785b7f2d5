// Sampling formula of MncRoiWarp (crop K = crop_size, pool P = pooled_size,
// window k = K / P, scale s = spatial_scale, features [B, H, W, C]):
//
//   y1n = y1 * s / max(H - 1, 1)          (likewise y2n; x1n, x2n with W)
//   in_y(i) = y1n * (H - 1) + i * (y2n - y1n) * (H - 1) / (K - 1),  i = 0..K-1
//             (K == 1: in_y = 0.5 * (y1n + y2n) * (H - 1))
//   in_x(j) = the same along x with W
//   crop[r, i, j, c] = bilinear(features[box_indices[r]], in_y(i), in_x(j), c)
//                      if 0 <= in_y(i) <= H - 1 and 0 <= in_x(j) <= W - 1, else 0
//   output[r, p, q, c] = max over 0 <= a, b < k of crop[r, p * k + a, q * k + b, c]
//   argmax[r, p, q, c] = a * k + b of the first (row-major) maximum
//
// which is tf.image.crop_and_resize(features, boxes_n, box_indices, [K, K],
// extrapolation_value=0) followed by tf.nn.max_pool2d(ksize=k, strides=k),
// with boxes_n = boxes * s / [H-1, W-1, H-1, W-1] (H or W == 1: divide by 1,
// so every sample sits on index 0 and the box gets no gradient on that axis).
// The gradient is the exact derivative of this forward: through the bilinear
// weights for features, through in_y / in_x for boxes, routed by argmax, and
// zero for samples outside the map (constant 0) -- crop_and_resize's choices.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "roi_warp_cpu.h"
#include "roi_warp_validate.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

#if GOOGLE_CUDA
#include "roi_warp_gpu.h"
#include "tensorflow/core/util/determinism.h"
#include "xla/stream_executor/stream.h"
#endif

namespace mnc_roi_warp {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

// The storage type roi_warp_cpu.h computes on for a TensorFlow dtype: float,
// or the bit patterns of Eigen::bfloat16 / Eigen::half (2 bytes each).
template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<Eigen::bfloat16> {
  using type = Bfloat16Bits;
};
template <>
struct Storage<Eigen::half> {
  using type = HalfBits;
};
static_assert(sizeof(Eigen::bfloat16) == 2 && sizeof(Eigen::half) == 2, "16-bit dtypes");

template <typename T>
const typename Storage<T>::type* Data(const Tensor& t) {
  return reinterpret_cast<const typename Storage<T>::type*>(t.flat<T>().data());
}
template <typename T>
typename Storage<T>::type* MutableData(Tensor* t) {
  return reinterpret_cast<typename Storage<T>::type*>(t->flat<T>().data());
}

// Attributes and input checks shared by all kernels.
class RoiWarpKernelBase : public OpKernel {
 public:
  explicit RoiWarpKernelBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("crop_size", &crop_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_size", &pooled_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial_scale", &spatial_scale_));
    OP_REQUIRES_OK(ctx, ValidateAttrs(crop_, pooled_, spatial_scale_));
  }

 protected:
  // Validates features / boxes / box_indices (boxes and indices must be in
  // host memory) and fills `dims`.
  absl::Status CheckInputs(const Tensor& features, const Tensor& boxes, const Tensor& box_indices,
                           WarpDims* dims) const {
    TF_RETURN_IF_ERROR(ValidateInputShapes(features.shape(), boxes.shape(), box_indices.shape()));
    TF_RETURN_IF_ERROR(ValidateBoxValues(boxes.flat<float>().data(),
                                         box_indices.flat<int32_t>().data(), boxes.dim_size(0),
                                         features.dim_size(0)));
    *dims = WarpDims{features.dim_size(0), features.dim_size(1), features.dim_size(2),
                     features.dim_size(3), boxes.dim_size(0),    crop_,
                     pooled_,              spatial_scale_};
    return absl::OkStatus();
  }

  TensorShape PooledShape(const WarpDims& d) const {
    return TensorShape({d.num_boxes, d.pooled, d.pooled, d.channels});
  }

  // grads and argmax of the gradient op must match the forward's output.
  absl::Status CheckGradInputs(const Tensor& grads, const Tensor& argmax,
                               const WarpDims& d) const {
    const TensorShape expected = PooledShape(d);
    if (grads.shape() != expected) {
      return absl::InvalidArgumentError(absl::StrCat("grads must have shape ",
                                                     expected.DebugString(), ", got shape ",
                                                     grads.shape().DebugString()));
    }
    if (argmax.shape() != expected) {
      return absl::InvalidArgumentError(absl::StrCat("argmax must have shape ",
                                                     expected.DebugString(), ", got shape ",
                                                     argmax.shape().DebugString()));
    }
    return absl::OkStatus();
  }

  int crop_ = 0;
  int pooled_ = 0;
  float spatial_scale_ = 0.f;
};

// The features as float: the tensor's own data for float, else a widened copy
// in `scratch` (exact; converted in parallel). Sets the context's status on
// allocation failure (the caller returns).
template <typename T>
const float* WidenedFeatures(OpKernelContext* ctx, const Tensor& features, Tensor* scratch) {
  if constexpr (std::is_same<T, float>::value) {
    return features.flat<float>().data();
  } else {
    const absl::Status status =
        ctx->allocate_temp(tensorflow::DT_FLOAT, features.shape(), scratch);
    if (!status.ok()) {
      ctx->SetStatus(status);
      return nullptr;
    }
    const int64_t total = features.NumElements();
    const auto* src = Data<T>(features);
    float* dst = scratch->flat<float>().data();
    const auto& threads = *ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads.num_threads, threads.workers, total / 4096 + 1, 4096 * 4,
                      [&](int64_t begin, int64_t end) {
                        const int64_t lo = begin * 4096, hi = std::min(total, end * 4096);
                        if (lo < hi) ConvertValues(src + lo, hi - lo, dst + lo);
                      });
    return dst;
  }
}

// T: the features' / output's dtype (float, bfloat16, half); sampling math in float.
template <typename T>
class RoiWarpCpuOp : public RoiWarpKernelBase {
 public:
  using RoiWarpKernelBase::RoiWarpKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& boxes = ctx->input(1);
    const Tensor& box_indices = ctx->input(2);
    WarpDims d;
    OP_REQUIRES_OK(ctx, CheckInputs(features, boxes, box_indices, &d));
    Tensor* output = nullptr;
    Tensor* argmax = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, PooledShape(d), &output));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, PooledShape(d), &argmax));
    if (output->NumElements() == 0) return;

    const float* b = boxes.flat<float>().data();
    const int32_t* idx = box_indices.flat<int32_t>().data();
    auto* out = MutableData<T>(output);
    const auto& threads = *ctx->device()->tensorflow_cpu_worker_threads();
    // 16-bit features: widened once into a float copy (the map is read ~4 times per
    // sample; it is small next to the [R, P, P, C] output, which is written as T).
    Tensor widened;
    const float* f = WidenedFeatures<T>(ctx, features, &widened);
    if (!ctx->status().ok()) return;
    uint8_t* arg = argmax->flat<uint8_t>().data();
    // ~10 cycles per (sample, channel): 4 loads, 6 flops, compare, 2 selects.
    const int64_t cost_per_box = int64_t{10} * crop_ * crop_ * d.channels;
    tensorflow::Shard(threads.num_threads, threads.workers, d.num_boxes, cost_per_box,
                      [&](int64_t begin, int64_t end) {
                        ForwardBoxes(f, b, idx, d, begin, end, out, arg);
                      });
  }
};

// T as RoiWarpCpuOp: grads, features and grad_features; the feature gradient
// is accumulated in float (a temporary buffer for 16-bit T) and rounded once.
template <typename T>
class RoiWarpGradCpuOp : public RoiWarpKernelBase {
 public:
  using RoiWarpKernelBase::RoiWarpKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grads = ctx->input(0);
    const Tensor& features = ctx->input(1);
    const Tensor& boxes = ctx->input(2);
    const Tensor& box_indices = ctx->input(3);
    const Tensor& argmax = ctx->input(4);
    WarpDims d;
    OP_REQUIRES_OK(ctx, CheckInputs(features, boxes, box_indices, &d));
    OP_REQUIRES_OK(ctx, CheckGradInputs(grads, argmax, d));
    Tensor* grad_features = nullptr;
    Tensor* grad_boxes = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, features.shape(), &grad_features));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, boxes.shape(), &grad_boxes));

    // Boxes grouped by image (counting sort, stable), so that work unit
    // (image, channel range) owns grad_features[image, :, :, range].
    const int32_t* idx = box_indices.flat<int32_t>().data();
    std::vector<int64_t> starts(d.batch + 1, 0), order(d.num_boxes);
    for (int64_t r = 0; r < d.num_boxes; ++r) ++starts[idx[r] + 1];
    for (int64_t i = 0; i < d.batch; ++i) starts[i + 1] += starts[i];
    std::vector<int64_t> fill(starts.begin(), starts.end() - 1);
    for (int64_t r = 0; r < d.num_boxes; ++r) order[fill[idx[r]]++] = r;

    // Work unit = (image, channel range). Ranges are whole kLanes groups, as
    // many per image as keeps every thread busy; the result does not depend
    // on the split (see BackwardImageChannels).
    const auto& threads = *ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t groups = ChannelGroups(d);
    const int64_t batch = std::max<int64_t>(d.batch, 1);
    const int64_t per_image = (threads.num_threads + batch - 1) / batch;
    const int64_t ranges = std::clamp<int64_t>(per_image, 1, std::max<int64_t>(groups, 1));
    const int64_t range_channels = (groups + ranges - 1) / ranges * kLanes;
    std::vector<double> partial(d.num_boxes * groups * 4, 0.);
    const auto* g = Data<T>(grads);
    Tensor widened;
    const float* f = WidenedFeatures<T>(ctx, features, &widened);
    if (!ctx->status().ok()) return;
    const float* b = boxes.flat<float>().data();
    const uint8_t* arg = argmax.flat<uint8_t>().data();
    constexpr bool kFloat = std::is_same<T, float>::value;
    Tensor accumulator;
    if (!kFloat) {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, features.shape(), &accumulator));
    }
    float* gf = kFloat ? reinterpret_cast<float*>(grad_features->flat<T>().data())
                       : accumulator.flat<float>().data();
    const int64_t boxes_per_image = d.batch > 0 ? d.num_boxes / d.batch + 1 : 0;
    // ~40 cycles per (sample, channel): 4 loads, 4 read-modify-writes, ~20 flops.
    const int64_t cost_per_unit = int64_t{40} * boxes_per_image * crop_ * crop_ * range_channels +
                                  d.height * d.width * range_channels;
    tensorflow::Shard(threads.num_threads, threads.workers, d.batch * ranges, cost_per_unit,
                      [&](int64_t begin, int64_t end) {
                        for (int64_t unit = begin; unit < end; ++unit) {
                          const int64_t image = unit / ranges;
                          const int64_t c0 = (unit % ranges) * range_channels;
                          const int64_t c1 = std::min(d.channels, c0 + range_channels);
                          if (c0 >= c1) continue;
                          BackwardImageChannels(g, f, b, arg, d, image,
                                                order.data() + starts[image],
                                                starts[image + 1] - starts[image], c0, c1, gf,
                                                partial.data());
                        }
                      });
    ReduceBoxGrad(partial.data(), d, grad_boxes->flat<float>().data());
    if (!kFloat && grad_features->NumElements() > 0) {
      const int64_t total = grad_features->NumElements();
      auto* out = MutableData<T>(grad_features);
      tensorflow::Shard(threads.num_threads, threads.workers, total / 4096 + 1, 4096 * 4,
                        [&](int64_t begin, int64_t end) {
                          const int64_t lo = begin * 4096, hi = std::min(total, end * 4096);
                          if (lo < hi) ConvertValues(gf + lo, hi - lo, out + lo);
                        });
    }
  }
};

#define MNC_REGISTER_CPU(T)                                                                  \
  REGISTER_KERNEL_BUILDER(Name("MncRoiWarp").Device(DEVICE_CPU).TypeConstraint<T>("T"),     \
                          RoiWarpCpuOp<T>);                                                  \
  REGISTER_KERNEL_BUILDER(Name("MncRoiWarpGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          RoiWarpGradCpuOp<T>);
MNC_REGISTER_CPU(float)
MNC_REGISTER_CPU(Eigen::bfloat16)
MNC_REGISTER_CPU(Eigen::half)
#undef MNC_REGISTER_CPU

#if GOOGLE_CUDA

using ::tensorflow::DEVICE_GPU;

void* GpuStream(OpKernelContext* ctx) {
  return ctx->op_device_context()->stream()->platform_specific_handle().stream;
}

absl::Status CudaStatus(const char* error) {
  return error == nullptr
             ? absl::OkStatus()
             : absl::InternalError(absl::StrCat("MncRoiWarp CUDA kernel failed: ", error));
}

// Device copies of the validated host tensors boxes and box_indices.
absl::Status UploadBoxes(OpKernelContext* ctx, const Tensor& host_boxes,
                         const Tensor& host_box_indices, Tensor* boxes, Tensor* box_indices) {
  TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_FLOAT, host_boxes.shape(), boxes));
  TF_RETURN_IF_ERROR(
      ctx->allocate_temp(tensorflow::DT_INT32, host_box_indices.shape(), box_indices));
  return CudaStatus(GpuUploadBoxes(host_boxes.flat<float>().data(),
                                   host_box_indices.flat<int32_t>().data(),
                                   host_boxes.dim_size(0), boxes->flat<float>().data(),
                                   box_indices->flat<int32_t>().data(), GpuStream(ctx)));
}

class RoiWarpGpuOp : public RoiWarpKernelBase {
 public:
  using RoiWarpKernelBase::RoiWarpKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    WarpDims d;
    OP_REQUIRES_OK(ctx, CheckInputs(features, ctx->input(1), ctx->input(2), &d));
    Tensor* output = nullptr;
    Tensor* argmax = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, PooledShape(d), &output));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, PooledShape(d), &argmax));
    if (output->NumElements() == 0) return;
    Tensor boxes, box_indices;
    OP_REQUIRES_OK(ctx, UploadBoxes(ctx, ctx->input(1), ctx->input(2), &boxes, &box_indices));
    OP_REQUIRES_OK(ctx, CudaStatus(GpuForward(
                            features.flat<float>().data(), boxes.flat<float>().data(),
                            box_indices.flat<int32_t>().data(), d, output->flat<float>().data(),
                            argmax->flat<uint8_t>().data(), GpuStream(ctx))));
  }
};

class RoiWarpGradGpuOp : public RoiWarpKernelBase {
 public:
  explicit RoiWarpGradGpuOp(OpKernelConstruction* ctx) : RoiWarpKernelBase(ctx) {
    // grad_features is scattered with float atomics; TF's own
    // crop_and_resize gradient refuses determinism mode the same way.
    OP_REQUIRES(ctx, !tensorflow::OpDeterminismRequired(),
                absl::UnimplementedError(
                    "A deterministic GPU implementation of MncRoiWarpGrad is not available "
                    "(op determinism is enabled); run the op on the CPU"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grads = ctx->input(0);
    const Tensor& features = ctx->input(1);
    const Tensor& argmax = ctx->input(4);
    WarpDims d;
    OP_REQUIRES_OK(ctx, CheckInputs(features, ctx->input(2), ctx->input(3), &d));
    OP_REQUIRES_OK(ctx, CheckGradInputs(grads, argmax, d));
    Tensor* grad_features = nullptr;
    Tensor* grad_boxes = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, features.shape(), &grad_features));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(2).shape(), &grad_boxes));
    Tensor boxes, box_indices, scratch;
    OP_REQUIRES_OK(ctx, UploadBoxes(ctx, ctx->input(2), ctx->input(3), &boxes, &box_indices));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({GpuBackwardScratchSize(d)}), &scratch));
    OP_REQUIRES_OK(ctx, CudaStatus(GpuBackward(
                            grads.flat<float>().data(), features.flat<float>().data(),
                            boxes.flat<float>().data(), box_indices.flat<int32_t>().data(),
                            argmax.flat<uint8_t>().data(), d, grad_features->flat<float>().data(),
                            grad_boxes->flat<float>().data(), scratch.flat<float>().data(),
                            GpuStream(ctx))));
  }
};

// boxes and box_indices stay in host memory: they are validated there (finite,
// in range) before anything reads the feature map.
REGISTER_KERNEL_BUILDER(
    Name("MncRoiWarp").Device(DEVICE_GPU).TypeConstraint<float>("T").HostMemory("boxes").HostMemory(
        "box_indices"),
    RoiWarpGpuOp);
REGISTER_KERNEL_BUILDER(
    Name("MncRoiWarpGrad")
        .Device(DEVICE_GPU)
        .TypeConstraint<float>("T")
        .HostMemory("boxes")
        .HostMemory("box_indices"),
    RoiWarpGradGpuOp);

#endif  // GOOGLE_CUDA

}  // namespace
}  // namespace mnc_roi_warp
