// A host emulation of the CUDA built-ins that csrc/cuda/kernels_cuda.cuh uses, so that file
// compiles unmodified with a C++ compiler and its kernels run on CPU threads (README.md).
//
// Include this before the device code. A launch runs the blocks one after another; the
// threads of a block are real threads that run concurrently, meet at a real barrier in
// __syncthreads and exchange values in the warp shuffles, which check their masks and widths.
// Any misuse, and any deadlock, ends the process with a message naming the kernel, the block
// and the thread (exit status 3).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ------------------------------------------------------------------------- qualifiers

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Block shared memory: one static per variable, shared by every thread of the process, and so
// by the threads of a block (blocks run one at a time). It keeps the previous block's values
// where CUDA's would be undefined (README.md).
#define __shared__ static

// ------------------------------------------------------------------------- vector types

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct uint3 {
  unsigned x, y, z;
};

// CUDA's vector types carry their size as alignment; a misaligned vector access is UB
// (UBSan: -fsanitize=alignment) as it is a fault on the GPU.
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(8) float2 {
  float x, y;
};

constexpr int warpSize = 32;

// ------------------------------------------------------------------------- thread identity

// Set by the emulation for each thread before it enters a kernel.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

namespace cuda_emu {

enum class ShuffleKind { kIdx, kUp, kDown, kXor };

// The value of `value` in the source lane; every lane named in mask must take part.
uint64_t shuffle(unsigned mask, uint64_t value, ShuffleKind kind, int operand, int width);
void syncthreads();
void syncwarp(unsigned mask);

template <typename T>
T shuffle_as(unsigned mask, T var, ShuffleKind kind, int operand, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move 1 to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = shuffle(mask, bits, kind, operand, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace cuda_emu

inline void __syncthreads() { cuda_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { cuda_emu::syncwarp(mask); }

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return cuda_emu::shuffle_as(mask, var, cuda_emu::ShuffleKind::kIdx, src_lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return cuda_emu::shuffle_as(mask, var, cuda_emu::ShuffleKind::kUp, static_cast<int>(delta),
                              width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return cuda_emu::shuffle_as(mask, var, cuda_emu::ShuffleKind::kDown, static_cast<int>(delta),
                              width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return cuda_emu::shuffle_as(mask, var, cuda_emu::ShuffleKind::kXor, lane_mask, width);
}

// ------------------------------------------------------------------------- launches

namespace cuda_emu {

// Runs body on every thread of every block of the grid (identity set, barriers armed), or of
// block *only alone; checks CUDA's launch limits first. `name` names the kernel in messages.
void run_grid(const std::string& name, dim3 grid, dim3 block, const std::function<void()>& body,
              const uint3* only = nullptr);

// A line printed with every error (the test case being run).
void set_context(std::string context);

struct LaunchStats {
  int64_t launches = 0, blocks = 0, threads = 0, barriers = 0, shuffles = 0;
};
LaunchStats& stats();

// kernel<<<grid, block>>>(args...), synchronously. The arguments are copied once, as a
// launch copies them to the device, and every thread calls the kernel on the copies.
// With only_block set, that block of the grid runs alone (a test of one block's arithmetic).
struct Launch {
  const uint3* only_block = nullptr;

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, const Args&... args) const {
    static_assert(sizeof...(Params) == sizeof...(Args), "kernel arity");
    const std::tuple<std::decay_t<Params>...> copies(args...);
    run_grid(
        symbol_name(reinterpret_cast<const void*>(kernel)), grid, block,
        [&] { std::apply(kernel, copies); }, only_block);
  }

  // The demangled name of a function (the executable is linked with -rdynamic).
  static std::string symbol_name(const void* function);
};

}  // namespace cuda_emu
