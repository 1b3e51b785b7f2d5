// Standalone check of the CUDA kernels against the CPU kernel, no TensorFlow
// needed (for GPU machines without TensorFlow-GPU). Runs forward and
// backward on random data (boxes partly and fully outside the map, flipped,
// several images) and prints the max differences; exit code 1 on mismatch.
//
//   cd custom_ops/roi_warp/standalone
//   nvcc -std=c++17 -O3 --fmad=false -DGOOGLE_CUDA=1 roi_warp_check.cu \
//       roi_warp_check_cpu.cc -o roi_warp_check && ./roi_warp_check
#ifndef GOOGLE_CUDA
#define GOOGLE_CUDA 1
#endif

#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "../roi_warp_gpu.h"
#include "../roi_warp_kernels.cu.cc"

namespace mnc_roi_warp {
void CpuForward(const float* features, const float* boxes, const int32_t* box_indices,
                const WarpDims& d, float* output, uint8_t* argmax);
void CpuBackward(const float* grads, const float* features, const float* boxes,
                 const int32_t* box_indices, const uint8_t* argmax, const WarpDims& d,
                 float* grad_features, float* grad_boxes);
}  // namespace mnc_roi_warp

namespace {

#define CHECK_CUDA(expr)                                                               \
  do {                                                                                 \
    const cudaError_t err_ = (expr);                                                   \
    if (err_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cudaGetErrorString(err_));        \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

#define CHECK_LAUNCH(expr)                                                             \
  do {                                                                                 \
    const char* err_ = (expr);                                                         \
    if (err_ != nullptr) {                                                             \
      std::fprintf(stderr, "%s failed: %s\n", #expr, err_);                            \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

template <typename T>
T* ToDevice(const std::vector<T>& host) {
  T* ptr = nullptr;
  CHECK_CUDA(cudaMalloc(&ptr, sizeof(T) * (host.empty() ? 1 : host.size())));
  CHECK_CUDA(cudaMemcpy(ptr, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice));
  return ptr;
}

template <typename T>
std::vector<T> ToHost(const T* ptr, size_t n) {
  std::vector<T> host(n);
  CHECK_CUDA(cudaMemcpy(host.data(), ptr, sizeof(T) * n, cudaMemcpyDeviceToHost));
  return host;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0.;
  for (size_t i = 0; i < a.size(); ++i) worst = std::fmax(worst, std::fabs(a[i] - b[i]));
  return worst;
}

double MaxAbs(const std::vector<float>& a) {
  double worst = 0.;
  for (float v : a) worst = std::fmax(worst, std::fabs(v));
  return worst;
}

}  // namespace

int main() {
  using mnc_roi_warp::WarpDims;
  // C = 37: not a multiple of the CPU's vector width; crop 28 -> pool 14.
  const WarpDims d{3, 19, 23, 37, 200, 28, 14, 1.f / 16};
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  std::vector<float> features(d.batch * d.height * d.width * d.channels);
  for (float& v : features) v = unit(rng) * 2.f - 1.f;
  std::vector<float> boxes(d.num_boxes * 4);
  std::vector<int32_t> box_indices(d.num_boxes);
  const float image_h = 16.f * d.height, image_w = 16.f * d.width;
  for (int64_t r = 0; r < d.num_boxes; ++r) {
    // Up to 30% beyond each image border, in either order (flipped boxes).
    for (int j = 0; j < 4; ++j) {
      const float extent = j % 2 == 0 ? image_h : image_w;
      boxes[4 * r + j] = (unit(rng) * 1.6f - 0.3f) * extent;
    }
    box_indices[r] = static_cast<int32_t>(rng() % d.batch);
  }
  const size_t out_size = d.num_boxes * d.pooled * d.pooled * d.channels;
  std::vector<float> grads(out_size);
  for (float& v : grads) v = unit(rng) * 2.f - 1.f;

  std::vector<float> cpu_out(out_size), cpu_gf(features.size()), cpu_gb(boxes.size());
  std::vector<uint8_t> cpu_arg(out_size);
  mnc_roi_warp::CpuForward(features.data(), boxes.data(), box_indices.data(), d, cpu_out.data(),
                           cpu_arg.data());
  mnc_roi_warp::CpuBackward(grads.data(), features.data(), boxes.data(), box_indices.data(),
                            cpu_arg.data(), d, cpu_gf.data(), cpu_gb.data());

  float* f_dev = ToDevice(features);
  float* b_dev = ToDevice(boxes);
  int32_t* i_dev = ToDevice(box_indices);
  float* g_dev = ToDevice(grads);
  float *out_dev, *gf_dev, *gb_dev, *scratch_dev;
  uint8_t* arg_dev;
  CHECK_CUDA(cudaMalloc(&out_dev, sizeof(float) * out_size));
  CHECK_CUDA(cudaMalloc(&arg_dev, out_size));
  CHECK_CUDA(cudaMalloc(&gf_dev, sizeof(float) * features.size()));
  CHECK_CUDA(cudaMalloc(&gb_dev, sizeof(float) * boxes.size()));
  CHECK_CUDA(cudaMalloc(&scratch_dev, sizeof(float) * mnc_roi_warp::GpuBackwardScratchSize(d)));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  CHECK_LAUNCH(mnc_roi_warp::GpuForward(f_dev, b_dev, i_dev, d, out_dev, arg_dev, stream));
  CHECK_LAUNCH(mnc_roi_warp::GpuBackward(g_dev, f_dev, b_dev, i_dev, arg_dev, d, gf_dev, gb_dev,
                                         scratch_dev, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  const std::vector<float> gpu_out = ToHost(out_dev, out_size);
  const std::vector<uint8_t> gpu_arg = ToHost(arg_dev, out_size);
  const std::vector<float> gpu_gf = ToHost(gf_dev, features.size());
  const std::vector<float> gpu_gb = ToHost(gb_dev, boxes.size());

  size_t arg_mismatch = 0;
  for (size_t i = 0; i < out_size; ++i) arg_mismatch += cpu_arg[i] != gpu_arg[i];
  const double out_diff = MaxAbsDiff(cpu_out, gpu_out);
  const double gf_diff = MaxAbsDiff(cpu_gf, gpu_gf) / std::fmax(1., MaxAbs(cpu_gf));
  const double gb_diff = MaxAbsDiff(cpu_gb, gpu_gb) / std::fmax(1., MaxAbs(cpu_gb));
  std::printf("forward  max |cpu - gpu| = %.3g, argmax mismatches = %zu / %zu\n", out_diff,
              arg_mismatch, out_size);
  std::printf("backward grad_features max rel diff = %.3g, grad_boxes max rel diff = %.3g\n",
              gf_diff, gb_diff);
  // The forward rounds identically (--fmad=false); the backward sums in
  // another order (atomics, block reductions), hence a tolerance.
  const bool ok = out_diff == 0. && arg_mismatch == 0 && gf_diff < 1e-5 && gb_diff < 1e-4;
  std::printf("%s\n", ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}
