// The device code, compiled unmodified against the emulation of the CUDA built-ins.
#include "emulated_ops.h"

#include <ATen/Dispatch.h>

#include <type_traits>

#include "cuda_emu.h"
// cuda_emu.h first: it defines the CUDA qualifiers and built-ins the device code uses.
#include "../../csrc/cuda/kernels_cuda.cuh"

namespace vae_ext {
namespace cuda_emulation {
namespace {

int g_sms = 1;
std::vector<LaunchRecord> g_launches;

// "void ns::forward_kernel<float, 4, true>(params...)" -> "forward_kernel<float, 4, true>"
std::string short_name(const std::string& symbol) {
  std::string name = symbol;
  int depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<') ++depth;
    if (name[i] == '>') --depth;
    if (name[i] == '(' && depth == 0) {
      name.resize(i);
      break;
    }
  }
  size_t start = 0;
  depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<') ++depth;
    if (name[i] == '>') --depth;
    if (depth == 0 &&
        (name[i] == ' ' || (name[i] == ':' && i + 1 < name.size() && name[i + 1] == ':'))) {
      start = name[i] == ' ' ? i + 1 : i + 2;
    }
  }
  return name.substr(start);
}

// The emulated launch, recording what was launched.
struct RecordingLaunch {
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, const Args&... args) const {
    LaunchRecord r;
    r.kernel = short_name(cuda_emu::Launch::symbol_name(reinterpret_cast<const void*>(kernel)));
    r.grid_x = grid.x;
    r.grid_y = grid.y;
    r.block = block.x;
    (record_tiling(r, args), ...);
    g_launches.push_back(r);
    cuda_emu::Launch{}(kernel, grid, block, args...);
  }

  template <typename A>
  static void record_tiling(LaunchRecord& r, const A& arg) {
    if constexpr (std::is_same_v<A, cuda_kernels::Tiling>) {
      r.tiled = true;
      r.rows = arg.rows;
      r.cols = arg.cols;
      r.row_tiles = arg.row_tiles;
      r.team = arg.team;
      r.splits = arg.splits;
    }
  }
};

}  // namespace

void set_multiprocessors(int sms) { g_sms = sms; }

std::vector<LaunchRecord> take_launches() { return std::exchange(g_launches, {}); }

PlanInfo plan_of(at::ScalarType dtype, int64_t rows, int64_t cols, bool vec, int sms) {
  const int group = vec ? vector_group_of(dtype) : cuda_kernels::kScalarGroup;
  const cuda_kernels::Tiling t = cuda_kernels::make_tiling(rows, cols, group, vec, sms);
  return {t.team, t.splits, t.row_tiles, cuda_kernels::grid_x(t, sms)};
}

int vector_group_of(at::ScalarType dtype) {
  int group = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "vector_group_of",
                                  [&] { group = cuda_kernels::vector_group<scalar_t>(); });
  return group;
}

int block_threads() { return cuda_kernels::kBlock; }

void forward_emulated(const ForwardTensors& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, a.mu.scalar_type(), "vae_ext_forward_emulated",
      [&] { cuda_kernels::run_forward<scalar_t>(a, g_sms, RecordingLaunch{}); });
}

void backward_emulated(const BackwardTensors& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, a.mu.scalar_type(), "vae_ext_backward_emulated",
      [&] { cuda_kernels::run_backward<scalar_t>(a, g_sms, RecordingLaunch{}); });
}

}  // namespace cuda_emulation
}  // namespace vae_ext
