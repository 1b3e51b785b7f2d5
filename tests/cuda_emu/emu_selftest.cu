// Self-test of cuda_emu.h: small CUDA kernels with and without the bugs the
// emulator must expose. Written in CUDA syntax; tests/test_cuda_emulation.py
// rewrites the triple-chevron launches as it does for the RoI warp kernels.
//
//   emu_selftest MODE ORDER     (ORDER: ascending | descending | random:SEED)
//
// Prints one line of results; the test checks them (or the error and exit
// code 3 of the emulator for the modes that must be refused).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

constexpr int kThreads = 256;

// Block sum of in[blockIdx.x * kThreads + threadIdx.x]: tree reduction in
// shared memory. barriers: 2 = correct, 1 = no barrier inside the loop,
// 0 = no barrier after the stores either. (Not a template: cuda_emu cannot
// poison the shared memory of template kernels, see cuda_emu.h.)
__global__ void BlockSum(const float* in, float* out, int barriers) {
  __shared__ float partial[kThreads];
  partial[threadIdx.x] = in[blockIdx.x * kThreads + threadIdx.x];
  if (barriers >= 1) __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    if (barriers >= 2) __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// Thread t writes shared[t], then reads its neighbour's slot.
__global__ void Neighbour(float* out, bool barrier) {
  __shared__ float slot[kThreads];
  slot[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (barrier) __syncthreads();
  out[threadIdx.x] = slot[(threadIdx.x + 1) % kThreads];
}

__global__ void Divergent(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.f;
}

__global__ void EarlyExit(float* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

__global__ void Store(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.f;  // off by one: writes out[n]
}

template <typename T>
__global__ void AtomicCount(T* counter) {
  atomicAdd(counter, T{1});
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const char* mode = argv[1];
  const char* order = argv[2];
  if (std::strcmp(order, "descending") == 0) {
    cuda_emu::SetThreadOrder(cuda_emu::Order::kDescending, 0);
  } else if (std::strncmp(order, "random:", 7) == 0) {
    cuda_emu::SetThreadOrder(cuda_emu::Order::kRandom, std::atoi(order + 7));
  }
  constexpr int kBlocks = 3;
  float *in, *out;
  cudaMalloc(&in, sizeof(float) * kBlocks * kThreads);
  cudaMalloc(&out, sizeof(float) * kBlocks * kThreads);
  float host[kBlocks * kThreads];
  for (int i = 0; i < kBlocks * kThreads; ++i) host[i] = static_cast<float>(i % 97);
  cudaMemcpy(in, host, sizeof(host), cudaMemcpyHostToDevice);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  int n_out = kBlocks;
  if (std::strcmp(mode, "sum") == 0) {
    BlockSum<<<kBlocks, kThreads, 0, stream>>>(in, out, 2);
  } else if (std::strcmp(mode, "sum_no_loop_barrier") == 0) {
    BlockSum<<<kBlocks, kThreads, 0, stream>>>(in, out, 1);
  } else if (std::strcmp(mode, "sum_no_barriers") == 0) {
    BlockSum<<<kBlocks, kThreads, 0, stream>>>(in, out, 0);
  } else if (std::strncmp(mode, "neighbour", 9) == 0) {
    Neighbour<<<1, kThreads, 0, stream>>>(out, std::strcmp(mode, "neighbour") == 0);
    n_out = kThreads;
  } else if (std::strcmp(mode, "divergent") == 0) {
    Divergent<<<1, kThreads>>>(out);
  } else if (std::strcmp(mode, "early_exit") == 0) {
    EarlyExit<<<1, kThreads>>>(out);
  } else if (std::strcmp(mode, "store_past_end") == 0) {
    float* small;
    cudaMalloc(&small, sizeof(float) * 100);
    Store<<<1, 128>>>(small, 100);
    cudaFree(small);  // checks the canary after the end
  } else if (std::strcmp(mode, "atomic") == 0) {
    cudaMemsetAsync(out, 0, sizeof(float), stream);
    AtomicCount<float><<<kBlocks, kThreads, 0, stream>>>(out);
    n_out = 1;
  } else if (std::strcmp(mode, "zero_grid") == 0) {
    AtomicCount<float><<<0, kThreads>>>(out);
    std::printf("%s\n", cudaGetErrorString(cudaGetLastError()));
    std::printf("%s\n", cudaGetErrorString(cudaGetLastError()));  // the error is cleared
    return 0;
  } else if (std::strcmp(mode, "memset_past_end") == 0) {
    const cudaError_t err = cudaMemsetAsync(out, 0, sizeof(float) * (kBlocks * kThreads + 1));
    std::printf("%s\n", cudaGetErrorString(err));
    return 0;
  } else {
    return 2;
  }
  if (cudaGetLastError() != cudaSuccess) return 2;
  cudaStreamSynchronize(stream);
  cudaMemcpy(host, out, sizeof(float) * n_out, cudaMemcpyDeviceToHost);
  for (int i = 0; i < n_out; ++i) std::printf("%s%.9g", i ? " " : "", host[i]);
  std::printf("\n");
  return 0;
}
