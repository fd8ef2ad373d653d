// Unit tests of the launch planning in csrc/cuda/kernels_cuda.cuh (plan_tests.cpp).
#pragma once

namespace vae_ext {
namespace cuda_emulation {

// Runs them, printing each failure; returns the number of failures. `quick` skips the run of
// a 2^27-column row on the emulation (seconds, not minutes, but ThreadSanitizer is slow).
int run_plan_tests(bool quick);

}  // namespace cuda_emulation
}  // namespace vae_ext
