// Unit tests of the launch planning in csrc/cuda/kernels_cuda.cuh (plan_tests.cpp).
#pragma once

namespace vae_ext {
namespace cuda_emulation {

// Runs them, printing each failure; returns the number of failures. `quick` skips the run of
// one long row (2^20 + 388 columns) on the emulation, slow under ThreadSanitizer.
int run_plan_tests(bool quick);

}  // namespace cuda_emulation
}  // namespace vae_ext
