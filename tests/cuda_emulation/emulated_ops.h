// The vae_ext ops with csrc/cuda/kernels_cuda.cuh's kernels run by the emulation: the same
// argument checks and launch sequence as the CUDA registration (OpFront, run_forward and
// run_backward), on CPU tensors, for a GPU with a given number of SMs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../../csrc/op_front.h"

namespace vae_ext {
namespace cuda_emulation {

void forward_emulated(const ForwardTensors& a);
void backward_emulated(const BackwardTensors& a);

using EmulatedOps = OpFront<forward_emulated, backward_emulated>;

// The multiprocessor count the launch plans are made for.
void set_multiprocessors(int sms);

// One launch as the host code planned it.
struct LaunchRecord {
  std::string kernel;  // e.g. "forward_kernel<float, 4, true>"
  unsigned grid_x = 0, grid_y = 0, block = 0;
  bool tiled = false;  // a row kernel: the fields below are its Tiling's
  int64_t rows = 0, cols = 0, row_tiles = 0;
  int team = 0;
  int64_t splits = 0;
};

// Every launch since the last call (then forgotten).
std::vector<LaunchRecord> take_launches();

// The planning of kernels_cuda.cuh, for choosing test shapes: the tiling (make_tiling) and
// grid width (grid_x) of a [rows, cols] launch of dtype on the vector or scalar path.
struct PlanInfo {
  int team;
  int64_t splits;
  int64_t row_tiles, grid_x;
};
PlanInfo plan_of(at::ScalarType dtype, int64_t rows, int64_t cols, bool vec, int sms);
int vector_group_of(at::ScalarType dtype);  // elements per group on the vector path
int block_threads();                        // threads per block of the row kernels

}  // namespace cuda_emulation
}  // namespace vae_ext
