// CUDA kernels of every op (csrc/ops.cpp): one fused pass forward (z and the per-sample KL)
// and one backward, launched on the current stream. The kernels, the launch plan and the
// sequence of launches are in kernels_cuda.cuh.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "kernels_cuda.cuh"

namespace vae_ext {
namespace cuda_kernels {
namespace {

int multiprocessors() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// The launch of run_forward / run_backward: on the current stream, checked.
struct StreamLaunch {
  cudaStream_t stream;

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, const Args&... args) const {
    kernel<<<grid, block, 0, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

void forward_cuda(const ForwardTensors& a) {
  const c10::cuda::CUDAGuard guard(a.mu.device());
  const StreamLaunch launch{at::cuda::getCurrentCUDAStream()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.mu.scalar_type(),
                                  "vae_ext_forward_cuda",
                                  [&] { run_forward<scalar_t>(a, multiprocessors(), launch); });
}

void backward_cuda(const BackwardTensors& a) {
  const c10::cuda::CUDAGuard guard(a.mu.device());
  const StreamLaunch launch{at::cuda::getCurrentCUDAStream()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.mu.scalar_type(),
                                  "vae_ext_backward_cuda",
                                  [&] { run_backward<scalar_t>(a, multiprocessors(), launch); });
}

}  // namespace cuda_kernels
}  // namespace vae_ext

TORCH_LIBRARY_IMPL(vae_ext, CUDA, m) {
  using vae_ext::cuda_kernels::backward_cuda;
  using vae_ext::cuda_kernels::forward_cuda;
  vae_ext::OpFront<forward_cuda, backward_cuda>::register_kernels(m);
}
