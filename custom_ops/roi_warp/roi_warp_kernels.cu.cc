// CUDA kernels of RoI warping. Sampling formula: see roi_warp_kernels.cc;
// the per-element math is roi_warp_math.h, shared with the CPU kernel.
// No TensorFlow headers: the standalone check (standalone/roi_warp_check.cu)
// includes this file directly. Build with --fmad=false so that sample
// positions and values round exactly as on the CPU (and in crop_and_resize).
#if GOOGLE_CUDA

#include <cuda_runtime.h>

#include "roi_warp_gpu.h"
#include "roi_warp_math.h"

namespace mnc_roi_warp {
namespace {

constexpr int kThreads = 256;
// Elements (cell, channel) of one box handled by one backward block.
constexpr int64_t kBackwardChunk = kThreads * 16;

// Largest grid of the grid-stride kernels; their loops cover the rest. The
// emulated-CUDA test (tests/test_cuda_emulation.py) lowers it so that small
// inputs make the loops wrap.
#ifndef MNC_ROI_WARP_MAX_BLOCKS
#define MNC_ROI_WARP_MAX_BLOCKS (int64_t{1} << 20)
#endif

int64_t NumBlocks(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  const int64_t cap = MNC_ROI_WARP_MAX_BLOCKS;
  return blocks < cap ? blocks : cap;
}

int64_t BackwardChunks(const WarpDims& d) {
  const int64_t per_box = d.pooled * d.pooled * d.channels;
  const int64_t chunks = (per_box + kBackwardChunk - 1) / kBackwardChunk;
  return chunks > 0 ? chunks : 1;
}

struct NormalizedBox {
  float y1, x1, y2, x2;
};

__device__ NormalizedBox LoadBox(const float* boxes, int64_t r, const WarpDims& d) {
  const int h = static_cast<int>(d.height), w = static_cast<int>(d.width);
  NormalizedBox b;
  b.y1 = NormalizeCoord(boxes[4 * r + 0], d.spatial_scale, h);
  b.x1 = NormalizeCoord(boxes[4 * r + 1], d.spatial_scale, w);
  b.y2 = NormalizeCoord(boxes[4 * r + 2], d.spatial_scale, h);
  b.x2 = NormalizeCoord(boxes[4 * r + 3], d.spatial_scale, w);
  return b;
}

// One thread per output element (r, py, px, c); c is fastest, so the corner
// reads of neighbouring threads are coalesced.
__global__ void ForwardKernel(const float* __restrict__ features, const float* __restrict__ boxes,
                              const int32_t* __restrict__ box_indices, WarpDims d,
                              float* __restrict__ output, uint8_t* __restrict__ argmax) {
  const int k = d.window();
  const int h = static_cast<int>(d.height), w = static_cast<int>(d.width);
  const int64_t C = d.channels, P = d.pooled;
  const int64_t total = d.num_boxes * P * P * C;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = idx % C;
    int64_t t = idx / C;
    const int px = static_cast<int>(t % P);
    t /= P;
    const int py = static_cast<int>(t % P);
    const int64_t r = t / P;
    const NormalizedBox box = LoadBox(boxes, r, d);
    const float* image = features + box_indices[r] * d.height * d.width * C + c;
    float best = 0.f;
    int best_slot = 0;
    for (int wy = 0; wy < k; ++wy) {
      const AxisSample ay = MakeAxisSample(box.y1, box.y2, py * k + wy, d.crop, h);
      for (int wx = 0; wx < k; ++wx) {
        const AxisSample ax = MakeAxisSample(box.x1, box.x2, px * k + wx, d.crop, w);
        float v = 0.f;
        if (ay.valid && ax.valid) {
          const float* top = image + ay.lo * d.width * C;
          const float* bottom = image + ay.hi * d.width * C;
          v = Bilinear(__ldg(top + ax.lo * C), __ldg(top + ax.hi * C), __ldg(bottom + ax.lo * C),
                       __ldg(bottom + ax.hi * C), ay.lerp, ax.lerp);
        }
        const int slot = wy * k + wx;
        if (slot == 0 || v > best) {  // ties keep the first slot, as on the CPU
          best = v;
          best_slot = slot;
        }
      }
    }
    output[idx] = best;
    argmax[idx] = static_cast<uint8_t>(best_slot);
  }
}

// Block (r, chunk) handles kBackwardChunk elements of box r: scatters into
// grad_features with atomics and writes its share of d loss / d box_n to
// partial[(r * chunks + chunk) * 4 + j] after a fixed-order block reduction.
__global__ void BackwardKernel(const float* __restrict__ grads, const float* __restrict__ features,
                               const float* __restrict__ boxes,
                               const int32_t* __restrict__ box_indices,
                               const uint8_t* __restrict__ argmax, WarpDims d, int64_t chunks,
                               float* __restrict__ grad_features, float* __restrict__ partial) {
  __shared__ float shared[4][kThreads];
  const int k = d.window();
  const int h = static_cast<int>(d.height), w = static_cast<int>(d.width);
  const int64_t C = d.channels, P = d.pooled, per_box = P * P * C;
  const int64_t r = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const NormalizedBox box = LoadBox(boxes, r, d);
  const int64_t image_offset = box_indices[r] * d.height * d.width * C;
  float sums[4] = {0.f, 0.f, 0.f, 0.f};  // y1n, x1n, y2n, x2n
  const int64_t end = min(per_box, (chunk + 1) * kBackwardChunk);
  for (int64_t e = chunk * kBackwardChunk + threadIdx.x; e < end; e += kThreads) {
    const int slot = argmax[r * per_box + e];
    if (slot >= k * k) continue;  // not produced by the forward: no route
    const int64_t c = e % C, cell = e / C;
    const int px = static_cast<int>(cell % P), py = static_cast<int>(cell / P);
    const AxisSample ay = MakeAxisSample(box.y1, box.y2, py * k + slot / k, d.crop, h);
    const AxisSample ax = MakeAxisSample(box.x1, box.x2, px * k + slot % k, d.crop, w);
    if (!(ay.valid && ax.valid)) continue;  // outside samples are constant 0
    const float g = grads[r * per_box + e];
    const int64_t tl = image_offset + (ay.lo * d.width + ax.lo) * C + c;
    const int64_t tr = image_offset + (ay.lo * d.width + ax.hi) * C + c;
    const int64_t bl = image_offset + (ay.hi * d.width + ax.lo) * C + c;
    const int64_t br = image_offset + (ay.hi * d.width + ax.hi) * C + c;
    atomicAdd(grad_features + tl, g * (1.f - ay.lerp) * (1.f - ax.lerp));
    atomicAdd(grad_features + tr, g * (1.f - ay.lerp) * ax.lerp);
    atomicAdd(grad_features + bl, g * ay.lerp * (1.f - ax.lerp));
    atomicAdd(grad_features + br, g * ay.lerp * ax.lerp);
    const float vtl = __ldg(features + tl), vtr = __ldg(features + tr);
    const float vbl = __ldg(features + bl), vbr = __ldg(features + br);
    const float d_pos_y = g * BilinearGradY(vtl, vtr, vbl, vbr, ax.lerp);
    const float d_pos_x = g * BilinearGradX(vtl, vtr, vbl, vbr, ay.lerp);
    sums[0] += d_pos_y * ay.d_c1n;
    sums[1] += d_pos_x * ax.d_c1n;
    sums[2] += d_pos_y * ay.d_c2n;
    sums[3] += d_pos_x * ax.d_c2n;
  }
  for (int j = 0; j < 4; ++j) shared[j][threadIdx.x] = sums[j];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      for (int j = 0; j < 4; ++j) shared[j][threadIdx.x] += shared[j][threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x < 4) partial[blockIdx.x * 4 + threadIdx.x] = shared[threadIdx.x][0];
}

// grad_boxes[r, j] = sum over chunks (in order) * d box_n / d box.
__global__ void ReduceBoxGradKernel(const float* __restrict__ partial, WarpDims d, int64_t chunks,
                                    float* __restrict__ grad_boxes) {
  float scale_y, scale_x;
  NormalizeGrad(d, &scale_y, &scale_x);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < d.num_boxes * 4; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / 4, j = i % 4;
    float sum = 0.f;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partial[(r * chunks + chunk) * 4 + j];
    grad_boxes[i] = sum * (j % 2 == 0 ? scale_y : scale_x);
  }
}

const char* LastError() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* GpuUploadBoxes(const float* host_boxes, const int32_t* host_box_indices,
                           int64_t num_boxes, float* boxes, int32_t* box_indices, void* stream) {
  if (num_boxes == 0) return nullptr;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  cudaError_t err = cudaMemcpyAsync(boxes, host_boxes, sizeof(float) * 4 * num_boxes,
                                    cudaMemcpyHostToDevice, s);
  if (err == cudaSuccess) {
    err = cudaMemcpyAsync(box_indices, host_box_indices, sizeof(int32_t) * num_boxes,
                          cudaMemcpyHostToDevice, s);
  }
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

const char* GpuForward(const float* features, const float* boxes, const int32_t* box_indices,
                       const WarpDims& d, float* output, uint8_t* argmax, void* stream) {
  const int64_t total = d.num_boxes * d.pooled * d.pooled * d.channels;
  if (total == 0) return nullptr;
  ForwardKernel<<<NumBlocks(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      features, boxes, box_indices, d, output, argmax);
  return LastError();
}

int64_t GpuBackwardScratchSize(const WarpDims& d) { return d.num_boxes * BackwardChunks(d) * 4; }

const char* GpuBackward(const float* grads, const float* features, const float* boxes,
                        const int32_t* box_indices, const uint8_t* argmax, const WarpDims& d,
                        float* grad_features, float* grad_boxes, float* scratch, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const size_t feature_bytes = sizeof(float) * d.batch * d.height * d.width * d.channels;
  if (feature_bytes > 0) {
    const cudaError_t err = cudaMemsetAsync(grad_features, 0, feature_bytes, s);
    if (err != cudaSuccess) return cudaGetErrorString(err);
  }
  if (d.num_boxes == 0) return nullptr;
  if (d.channels == 0) {
    const cudaError_t err = cudaMemsetAsync(grad_boxes, 0, sizeof(float) * d.num_boxes * 4, s);
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
  }
  const int64_t chunks = BackwardChunks(d);
  BackwardKernel<<<d.num_boxes * chunks, kThreads, 0, s>>>(
      grads, features, boxes, box_indices, argmax, d, chunks, grad_features, scratch);
  const char* err = LastError();
  if (err != nullptr) return err;
  ReduceBoxGradKernel<<<NumBlocks(d.num_boxes * 4), kThreads, 0, s>>>(scratch, d, chunks,
                                                                      grad_boxes);
  return LastError();
}

}  // namespace mnc_roi_warp

#endif  // GOOGLE_CUDA
