// Test-only CUDA emulation: runs CUDA C++ kernels, compiled by g++, on the
// CPU, so that tests/test_cuda_emulation.py can execute the RoI warp CUDA
// kernels' own source (custom_ops/roi_warp/roi_warp_kernels.cu.cc) on
// machines without a GPU and compare them with the CPU kernels. Not a
// general CUDA implementation and not for production: it emulates what
// those kernels use and fails loudly on what it cannot emulate faithfully.
//
// Why our own header: the maintained CPU runtimes for GPU kernels found
// (ROCm HIP-CPU, header-only, HIP API, parallel via TBB; illuhad/hipCPU,
// OpenMP, unmaintained; javier-cabezas/cuda4cpu, 2014, unmaintained) need
// HIP spellings or hipLaunchKernelGGL instead of CUDA's <<<>>>, and none
// controls the order of threads between barriers or poisons shared memory,
// which is what makes a missing __syncthreads visible here.
//
// Execution model (deterministic, one OS thread):
// - A launch runs every block of the grid, one block after the other.
// - The threads of a block are fibers (ucontext, own stack with a guard
//   page). Between two barriers the scheduler runs each thread, one at a
//   time, until it reaches __syncthreads() or returns; the order of the
//   threads in each such phase is set by SetThreadOrder: ascending,
//   descending or a fresh random permutation per phase. A barrier that is
//   missing lets a thread read shared memory that another thread has not
//   written yet (ascending / random orders) or has already overwritten for
//   the next step (descending / random), so the results depend on the order
//   and differ from the CPU kernels; tests run all three orders.
// - __shared__ variables are static storage in one linker section
//   (cuda_emu_shared) that is filled with 0xFF bytes (float NaN, int -1)
//   before every block, so reading shared memory nobody wrote in this
//   block gives NaN instead of the previous block's leftovers. GCC ignores
//   the section of a static in a function template: such shared memory is
//   not poisoned, so tests/test_cuda_emulation.py checks (nm) that every
//   function-local static of the kernel source lies in the section.
// - __syncthreads() checks that every thread of the block that has not
//   returned waits at the same __syncthreads() (same source line), and that
//   no thread returned while others wait (CUDA allows a barrier in
//   conditional code only when all threads take the same branch); both are
//   reported as errors, which is stricter than hardware.
// - atomicAdd(float*, float) is an atomic float add (compare-exchange loop).
// - Memory from cudaMalloc lies just below a PROT_NONE page: a kernel
//   reading or writing past the end of an allocation faults (SIGSEGV,
//   reported with the allocation), and the bytes before the allocation in
//   its first page, and the up to 15 bytes between its end and the guard page
//   (allocations start 16-byte aligned), are canaries checked by cudaFree /
//   CheckAllocations().
//   cudaMemset / cudaMemcpy check that the range lies in one allocation.
// - Streams exist only as handles: everything runs synchronously, in issue
//   order, which is what one stream guarantees.
//
// Not emulated (compile errors or runtime errors, never silent): warp
// intrinsics (__shfl_*_sync, __ballot_sync, ...: they need threads in lock
// step), dynamic shared memory (extern __shared__), poisoned __shared__ in
// template kernels (see above), cooperative groups, textures, more than one
// OS thread. Kernels are launched with ::cuda_emu::Launch(kernel, grid,
// block, shmem, stream)(args...); tests/test_cuda_emulation.py rewrites every
// kernel<<<grid, block, shmem, stream>>>(args) of the source into that.
#ifndef MNC_TESTS_CUDA_EMU_CUDA_EMU_H_
#define MNC_TESTS_CUDA_EMU_CUDA_EMU_H_

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------- keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("cuda_emu_shared")))
#define __syncthreads() ::cuda_emu::SyncThreads(__LINE__)

// ------------------------------------------------------------ vector types
struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

// ------------------------------------------------------------ runtime types
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st {
  int unused;
};
typedef CUstream_st* cudaStream_t;

namespace cuda_emu {

[[noreturn]] inline void Fail(const char* what) {
  std::fprintf(stderr, "cuda_emu error: %s\n", what);
  std::fflush(stderr);
  _exit(3);
}

// ------------------------------------------------------- thread scheduling
enum class Order { kAscending, kDescending, kRandom };

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;  // mmap'ed, lowest page PROT_NONE
  uint3 thread_idx{0, 0, 0};
  int barrier_line = 0;  // > 0: waiting at the __syncthreads() of that line
  bool done = false;
};

struct State {
  Order order = Order::kAscending;
  std::mt19937 rng{0};
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;  // nullptr: host code
  ucontext_t scheduler;
  uint3 block_idx{0, 0, 0};
  dim3 block_dim, grid_dim;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  cudaError_t last_error = cudaSuccess;
  int64_t blocks_run = 0;
  int64_t barriers_passed = 0;
};

inline State& GetState() {
  static State state;
  return state;
}

constexpr size_t kPage = 4096;
constexpr size_t kStackBytes = 64 * 1024;

inline void SetThreadOrder(Order order, unsigned seed) {
  GetState().order = order;
  GetState().rng.seed(seed);
}

inline const uint3& ThreadIdx() {
  const State& s = GetState();
  if (s.current == nullptr) Fail("threadIdx read outside a kernel");
  return s.current->thread_idx;
}

inline const uint3& BlockIdx() { return GetState().block_idx; }
inline const dim3& BlockDim() { return GetState().block_dim; }
inline const dim3& GridDim() { return GetState().grid_dim; }

__attribute__((noinline)) inline void SyncThreads(int line) {
  State& s = GetState();
  if (s.current == nullptr) Fail("__syncthreads() outside a kernel");
  s.current->barrier_line = line;
  asm volatile("" ::: "memory");
  swapcontext(&s.current->context, &s.scheduler);
  asm volatile("" ::: "memory");
}

inline void FiberEntry() {
  State& s = GetState();
  s.body(s.body_arg);
  s.current->done = true;
  // returns to uc_link (the scheduler)
}

extern "C" char __start_cuda_emu_shared[] __attribute__((weak));
extern "C" char __stop_cuda_emu_shared[] __attribute__((weak));

inline void PoisonSharedMemory() {
  char* begin = __start_cuda_emu_shared;
  char* end = __stop_cuda_emu_shared;
  if (begin != nullptr && end > begin) memset(begin, 0xFF, end - begin);
}

inline void RunBlock(State& s, size_t num_threads) {
  PoisonSharedMemory();
  while (s.fibers.size() < num_threads) {
    Fiber f;
    void* mem = mmap(nullptr, kStackBytes + kPage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) Fail("cannot allocate a fiber stack");
    mprotect(mem, kPage, PROT_NONE);  // stack overflow faults
    f.stack = static_cast<char*>(mem);
    s.fibers.push_back(f);
  }
  const dim3& b = s.block_dim;
  for (size_t t = 0; t < num_threads; ++t) {
    Fiber& f = s.fibers[t];
    f.thread_idx = uint3{static_cast<unsigned>(t % b.x), static_cast<unsigned>(t / b.x % b.y),
                         static_cast<unsigned>(t / (b.x * b.y))};
    f.barrier_line = 0;
    f.done = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack + kPage;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &s.scheduler;
    makecontext(&f.context, &FiberEntry, 0);
  }
  std::vector<size_t> order(num_threads);
  for (;;) {
    for (size_t i = 0; i < num_threads; ++i) {
      order[i] = s.order == Order::kDescending ? num_threads - 1 - i : i;
    }
    if (s.order == Order::kRandom) std::shuffle(order.begin(), order.end(), s.rng);
    for (size_t t : order) {
      Fiber& f = s.fibers[t];
      f.barrier_line = 0;
      s.current = &f;
      swapcontext(&s.scheduler, &f.context);
    }
    s.current = nullptr;
    size_t waiting = 0;
    int line = 0;
    for (size_t t = 0; t < num_threads; ++t) {
      const Fiber& f = s.fibers[t];
      if (f.done) continue;
      ++waiting;
      if (line != 0 && f.barrier_line != line) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "threads of block %u wait at different __syncthreads() (lines %d and %d)",
                 s.block_idx.x, line, f.barrier_line);
        Fail(msg);
      }
      line = f.barrier_line;
    }
    if (waiting == 0) break;
    if (waiting != num_threads) {
      char msg[160];
      snprintf(msg, sizeof(msg),
               "block %u: %zu of %zu threads wait at __syncthreads() (line %d), the others "
               "returned",
               s.block_idx.x, waiting, num_threads, line);
      Fail(msg);
    }
    ++s.barriers_passed;
    // Only threads that have not returned are resumed; all are waiting here.
  }
  ++s.blocks_run;
}

// A kernel call: Launch(kernel, grid, block, shmem, stream)(args...).
template <typename... Params>
class Launcher {
 public:
  Launcher(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shmem, cudaStream_t stream)
      : kernel_(kernel), grid_(grid), block_(block), shmem_(shmem) {
    (void)stream;
  }

  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "wrong number of kernel arguments");
    State& s = GetState();
    const uint64_t threads = uint64_t{block_.x} * block_.y * block_.z;
    // The limits of every GPU since compute capability 3.0.
    if (grid_.x == 0 || grid_.y == 0 || grid_.z == 0 || threads == 0 || threads > 1024 ||
        block_.z > 64 || grid_.x > 2147483647u || grid_.y > 65535 || grid_.z > 65535 ||
        shmem_ > 48 * 1024) {
      s.last_error = cudaErrorInvalidConfiguration;
      return;
    }
    std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    auto call = [this, &params]() { std::apply(kernel_, params); };
    using Call = decltype(call);
    s.body = [](void* arg) { (*static_cast<Call*>(arg))(); };
    s.body_arg = &call;
    s.block_dim = block_;
    s.grid_dim = grid_;
    for (unsigned z = 0; z < grid_.z; ++z) {
      for (unsigned y = 0; y < grid_.y; ++y) {
        for (unsigned x = 0; x < grid_.x; ++x) {
          s.block_idx = uint3{x, y, z};
          RunBlock(s, threads);
        }
      }
    }
    s.body = nullptr;
    s.body_arg = nullptr;
  }

 private:
  void (*kernel_)(Params...);
  dim3 grid_, block_;
  size_t shmem_;
};

template <typename... Params>
Launcher<Params...> Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shmem = 0,
                           cudaStream_t stream = nullptr) {
  return Launcher<Params...>(kernel, grid, block, shmem, stream);
}

// ------------------------------------------------------------ device memory
constexpr unsigned char kCanary = 0xA5;

struct Allocation {
  char* base;         // mmap'ed: [base, base + span) readable, then one PROT_NONE page
  size_t span;        // multiple of kPage
  size_t size;        // bytes asked for; the allocation ends at base + span
  const char* begin;  // base + span - size, rounded down to 16 bytes; canaries around
};

inline std::map<const char*, Allocation>& Allocations() {
  static std::map<const char*, Allocation> allocations;
  return allocations;
}

// The allocation holding [ptr, ptr + bytes), or nullptr.
inline const Allocation* FindAllocation(const void* ptr, size_t bytes) {
  const char* p = static_cast<const char*>(ptr);
  auto& all = Allocations();
  auto it = all.upper_bound(p);
  if (it == all.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  const char* end = a.base + a.span;
  if (p < a.begin || p + bytes > end) return nullptr;
  return &a;
}

inline void CheckCanary(const Allocation& a) {
  for (const char* c = a.base; c < a.begin; ++c) {
    if (static_cast<unsigned char>(*c) != kCanary) {
      char msg[160];
      snprintf(msg, sizeof(msg),
               "write before the start of a %zu-byte allocation (%td bytes before)", a.size,
               a.begin - c);
      Fail(msg);
    }
  }
  for (const char* c = a.begin + a.size; c < a.base + a.span; ++c) {
    if (static_cast<unsigned char>(*c) != kCanary) {
      char msg[160];
      snprintf(msg, sizeof(msg), "write past the end of a %zu-byte allocation (%td bytes past)",
               a.size, c - (a.begin + a.size));
      Fail(msg);
    }
  }
}

// Checks every live allocation's canary (after a kernel, for example).
inline void CheckAllocations() {
  for (const auto& entry : Allocations()) CheckCanary(entry.second);
}

inline void OnSegfault(int, siginfo_t* info, void*) {
  const char* addr = static_cast<const char*>(info->si_addr);
  for (const auto& entry : Allocations()) {
    const Allocation& a = entry.second;
    if (addr >= a.base + a.span && addr < a.base + a.span + kPage) {
      char msg[200];
      snprintf(msg, sizeof(msg),
               "out-of-bounds access %td bytes past the end of a %zu-byte device allocation",
               addr - (a.base + a.span), a.size);
      Fail(msg);
    }
  }
  for (const Fiber& f : GetState().fibers) {
    if (addr >= f.stack && addr < f.stack + kPage) Fail("kernel thread stack overflow");
  }
  Fail("segmentation fault (not next to a device allocation)");
}

inline void InstallFaultHandler() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  static char alt_stack[64 * 1024];
  stack_t ss{};
  ss.ss_sp = alt_stack;
  ss.ss_size = sizeof(alt_stack);
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = &OnSegfault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

}  // namespace cuda_emu

// ------------------------------------------------------- thread built-ins
#define threadIdx (::cuda_emu::ThreadIdx())
#define blockIdx (::cuda_emu::BlockIdx())
#define blockDim (::cuda_emu::BlockDim())
#define gridDim (::cuda_emu::GridDim())
constexpr int warpSize = 32;

// ------------------------------------------------------- device functions
template <typename T>
inline T __ldg(const T* ptr) {
  return *ptr;
}

inline float atomicAdd(float* address, float value) {
  uint32_t* bits = reinterpret_cast<uint32_t*>(address);
  uint32_t old = __atomic_load_n(bits, __ATOMIC_RELAXED);
  for (;;) {
    float old_value;
    memcpy(&old_value, &old, 4);
    const float new_value = old_value + value;
    uint32_t desired;
    memcpy(&desired, &new_value, 4);
    if (__atomic_compare_exchange_n(bits, &old, desired, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
      return old_value;
    }
  }
}

// CUDA's min / max overloads for integers and floats (the usual arithmetic
// conversions pick the type, as nvcc's overload set does for mixed types).
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  return static_cast<T>(a) < static_cast<T>(b) ? static_cast<T>(a) : static_cast<T>(b);
}

template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  return static_cast<T>(a) < static_cast<T>(b) ? static_cast<T>(b) : static_cast<T>(a);
}

// ------------------------------------------------------------ runtime API
inline const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
  }
  return "unknown error";
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t err = ::cuda_emu::GetState().last_error;
  ::cuda_emu::GetState().last_error = cudaSuccess;
  return err;
}

inline cudaError_t cudaPeekAtLastError() { return ::cuda_emu::GetState().last_error; }

inline cudaError_t cudaMalloc(void** ptr, size_t size) {
  using ::cuda_emu::kPage;
  ::cuda_emu::InstallFaultHandler();
  const size_t span = (size + 16 + kPage - 1) / kPage * kPage;
  void* mem =
      mmap(nullptr, span + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return cudaErrorMemoryAllocation;
  char* base = static_cast<char*>(mem);
  mprotect(base + span, kPage, PROT_NONE);
  const uintptr_t end = reinterpret_cast<uintptr_t>(base + span);
  char* begin = reinterpret_cast<char*>((end - size) & ~uintptr_t{15});
  memset(base, ::cuda_emu::kCanary, span);  // canaries around [begin, begin + size)
  ::cuda_emu::Allocations()[begin] = ::cuda_emu::Allocation{base, span, size, begin};
  *ptr = begin;
  return cudaSuccess;
}

template <typename T>
inline cudaError_t cudaMalloc(T** ptr, size_t size) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), size);
}

inline cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  auto& all = ::cuda_emu::Allocations();
  auto it = all.find(static_cast<const char*>(ptr));
  if (it == all.end()) return cudaErrorInvalidValue;
  ::cuda_emu::CheckCanary(it->second);
  munmap(it->second.base, it->second.span + ::cuda_emu::kPage);
  all.erase(it);
  return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t = nullptr) {
  if (bytes == 0) return cudaSuccess;
  if (::cuda_emu::FindAllocation(ptr, bytes) == nullptr) return cudaErrorInvalidValue;
  memset(ptr, value, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  return cudaMemsetAsync(ptr, value, bytes);
}

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dst_device && ::cuda_emu::FindAllocation(dst, bytes) == nullptr) return cudaErrorInvalidValue;
  if (src_device && ::cuda_emu::FindAllocation(src, bytes) == nullptr) return cudaErrorInvalidValue;
  memcpy(dst, src, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind);
}

inline cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  *stream = new CUstream_st{0};
  return cudaSuccess;
}

inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}

inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

#endif  // MNC_TESTS_CUDA_EMU_CUDA_EMU_H_
