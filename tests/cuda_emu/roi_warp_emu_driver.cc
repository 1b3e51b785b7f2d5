// Runs the RoI warp CUDA launchers (custom_ops/roi_warp/roi_warp_kernels.cu.cc,
// compiled by g++ against cuda_emu.h) the way the TF GPU kernels call them,
// on raw little-endian buffers written by tests/test_cuda_emulation.py.
//
//   roi_warp_emu_driver DIR B H W C R CROP POOLED SCALE MAX_BLOCKS ORDER...
//
// Reads DIR/{features,boxes,grads}.f32 and DIR/box_indices.i32. For each
// ORDER (ascending | descending | random:SEED, the thread order between
// barriers) runs the forward (GpuUploadBoxes + GpuForward) and the backward
// (GpuUploadBoxes + GpuBackward on the forward's argmax) and writes
// DIR/ORDER.{output.f32,argmax.u8,grad_features.f32,grad_boxes.f32}.
// MAX_BLOCKS caps the grid of the grid-stride kernels (source default 2^20).
// Output buffers start filled with 0xFF bytes (NaN, argmax 255), so an
// element no kernel writes shows up. Exit codes: 0 ok, 2 a launcher returned
// an error, 3 the emulator found an error (message on stderr).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_emu.h"

// Grid cap of the grid-stride kernels (MAX_BLOCKS); the test compiles with
// -DMNC_ROI_WARP_MAX_BLOCKS=roi_warp_emu_max_blocks.
int64_t roi_warp_emu_max_blocks = 1;

// The kernel source with kernel<<<...>>>(...) rewritten to
// ::cuda_emu::Launch(kernel, ...)(...) by the test, nothing else changed.
#include "roi_warp_kernels.emu.cc"

namespace {

using mnc_roi_warp::WarpDims;

[[noreturn]] void Die(const std::string& what, int code = 2) {
  std::fprintf(stderr, "roi_warp_emu_driver: %s\n", what.c_str());
  std::exit(code);
}

template <typename T>
std::vector<T> ReadFile(const std::string& path, size_t count) {
  std::vector<T> data(count);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) Die("cannot open " + path);
  if (count > 0 && std::fread(data.data(), sizeof(T), count, f) != count) {
    Die("short read " + path);
  }
  std::fclose(f);
  return data;
}

template <typename T>
void WriteFile(const std::string& path, const T* data, size_t count) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) Die("cannot write " + path);
  if (count > 0) std::fwrite(data, sizeof(T), count, f);
  std::fclose(f);
}

// A device buffer (cudaMalloc of the emulator: guard page after its end).
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;

  explicit DeviceBuffer(size_t n) : count(n) {
    if (cudaMalloc(&ptr, sizeof(T) * n) != cudaSuccess) Die("cudaMalloc failed");
    if (n > 0) memset(ptr, 0xFF, sizeof(T) * n);  // poison: unwritten elements show up
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }

  void Upload(const std::vector<T>& host) {
    if (cudaMemcpy(ptr, host.data(), sizeof(T) * count, cudaMemcpyHostToDevice) != cudaSuccess) {
      Die("cudaMemcpy to device failed");
    }
  }
  std::vector<T> Download() const {
    std::vector<T> host(count);
    if (cudaMemcpy(host.data(), ptr, sizeof(T) * count, cudaMemcpyDeviceToHost) != cudaSuccess) {
      Die("cudaMemcpy to host failed");
    }
    return host;
  }
};

void Check(const char* error, const char* what) {
  if (error != nullptr) Die(std::string(what) + " returned: " + error);
  cuda_emu::CheckAllocations();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 12) Die("usage: DIR B H W C R CROP POOLED SCALE MAX_BLOCKS ORDER...");
  const std::string dir = argv[1];
  WarpDims d;
  d.batch = std::atoll(argv[2]);
  d.height = std::atoll(argv[3]);
  d.width = std::atoll(argv[4]);
  d.channels = std::atoll(argv[5]);
  d.num_boxes = std::atoll(argv[6]);
  d.crop = std::atoi(argv[7]);
  d.pooled = std::atoi(argv[8]);
  d.spatial_scale = std::strtof(argv[9], nullptr);
  roi_warp_emu_max_blocks = std::atoll(argv[10]);
  if (roi_warp_emu_max_blocks < 1) Die("MAX_BLOCKS must be >= 1");

  const size_t n_features = d.batch * d.height * d.width * d.channels;
  const size_t n_out = d.num_boxes * d.pooled * d.pooled * d.channels;
  const auto features = ReadFile<float>(dir + "/features.f32", n_features);
  const auto boxes = ReadFile<float>(dir + "/boxes.f32", d.num_boxes * 4);
  const auto box_indices = ReadFile<int32_t>(dir + "/box_indices.i32", d.num_boxes);
  const auto grads = ReadFile<float>(dir + "/grads.f32", n_out);

  cudaStream_t stream;
  cudaStreamCreate(&stream);
  for (int a = 11; a < argc; ++a) {
    const std::string order = argv[a];
    if (order == "ascending") {
      cuda_emu::SetThreadOrder(cuda_emu::Order::kAscending, 0);
    } else if (order == "descending") {
      cuda_emu::SetThreadOrder(cuda_emu::Order::kDescending, 0);
    } else if (order.rfind("random:", 0) == 0) {
      cuda_emu::SetThreadOrder(cuda_emu::Order::kRandom, std::atoi(order.c_str() + 7));
    } else {
      Die("unknown order " + order);
    }
    DeviceBuffer<float> f_dev(n_features), g_dev(n_out);
    f_dev.Upload(features);
    g_dev.Upload(grads);

    // Forward, as RoiWarpGpuOp: device copies of the host boxes, then the kernel.
    DeviceBuffer<float> out_dev(n_out);
    DeviceBuffer<uint8_t> arg_dev(n_out);
    {
      DeviceBuffer<float> b_dev(boxes.size());
      DeviceBuffer<int32_t> i_dev(box_indices.size());
      Check(mnc_roi_warp::GpuUploadBoxes(boxes.data(), box_indices.data(), d.num_boxes,
                                         b_dev.ptr, i_dev.ptr, stream),
            "GpuUploadBoxes");
      Check(mnc_roi_warp::GpuForward(f_dev.ptr, b_dev.ptr, i_dev.ptr, d, out_dev.ptr, arg_dev.ptr,
                                     stream),
            "GpuForward");
    }

    // Backward, as RoiWarpGradGpuOp (scratch and outputs uninitialised there: poisoned here).
    DeviceBuffer<float> gf_dev(n_features), gb_dev(boxes.size());
    {
      DeviceBuffer<float> b_dev(boxes.size());
      DeviceBuffer<int32_t> i_dev(box_indices.size());
      Check(mnc_roi_warp::GpuUploadBoxes(boxes.data(), box_indices.data(), d.num_boxes,
                                         b_dev.ptr, i_dev.ptr, stream),
            "GpuUploadBoxes");
      DeviceBuffer<float> scratch(mnc_roi_warp::GpuBackwardScratchSize(d));
      Check(mnc_roi_warp::GpuBackward(g_dev.ptr, f_dev.ptr, b_dev.ptr, i_dev.ptr, arg_dev.ptr, d,
                                      gf_dev.ptr, gb_dev.ptr, scratch.ptr, stream),
            "GpuBackward");
    }
    if (cudaStreamSynchronize(stream) != cudaSuccess) Die("cudaStreamSynchronize failed");

    std::string tag = order;
    for (char& c : tag) {
      if (c == ':') c = '_';
    }
    const std::string prefix = dir + "/" + tag;
    WriteFile(prefix + ".output.f32", out_dev.Download().data(), n_out);
    WriteFile(prefix + ".argmax.u8", arg_dev.Download().data(), n_out);
    WriteFile(prefix + ".grad_features.f32", gf_dev.Download().data(), n_features);
    WriteFile(prefix + ".grad_boxes.f32", gb_dev.Download().data(), boxes.size());
  }
  cudaStreamDestroy(stream);
  const cuda_emu::State& s = cuda_emu::GetState();
  std::printf("{\"blocks\": %lld, \"barriers\": %lld}\n", static_cast<long long>(s.blocks_run),
              static_cast<long long>(s.barriers_passed));
  return 0;
}
