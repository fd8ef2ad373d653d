// CUDA kernels of every op (csrc/ops.cpp): one fused pass forward (z and the per-sample KL)
// and one backward, launched on the current stream. The kernels and the launch plan are in
// kernels_cuda.cuh.
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

dim3 grid_of(const Tiling& t, int sms) {
  return dim3(static_cast<unsigned>(grid_x(t, sms)), static_cast<unsigned>(grid_y(t)));
}

template <typename S>
void launch_forward(const ForwardArgs& a) {
  using T = at::opmath_type<S>;
  constexpr int kVecGroup = vector_group<S>();
  const int sms = multiprocessors();
  const ForwardPlan<S> plan = plan_forward<S>(a, sms);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid = grid_of(plan.tiling, sms);
  if (plan.vec) {
    forward_kernel<S, kVecGroup, true><<<grid, kBlock, 0, stream>>>(plan.params, plan.tiling);
  } else {
    forward_kernel<S, kScalarGroup, false><<<grid, kBlock, 0, stream>>>(plan.params, plan.tiling);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (plan.partials.defined()) {
    const int64_t rows = a.shape.rows;
    const auto blocks = static_cast<unsigned>(sum_partials_blocks(rows, sms));
    sum_partials_kernel<T><<<blocks, kBlock, 0, stream>>>(plan.params.kl, plan.tiling.splits, rows,
                                                          a.kl.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename S>
void launch_backward(const BackwardArgs& a) {
  constexpr int kVecGroup = vector_group<S>();
  const int sms = multiprocessors();
  const BackwardPlan<S> plan = plan_backward<S>(a, sms);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid = grid_of(plan.tiling, sms);
  if (plan.vec) {
    backward_kernel<S, kVecGroup, true><<<grid, kBlock, 0, stream>>>(plan.params, plan.tiling);
  } else {
    backward_kernel<S, kScalarGroup, false><<<grid, kBlock, 0, stream>>>(plan.params, plan.tiling);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void forward_cuda(const ForwardArgs& a) {
  if (a.shape.rows == 0) return;
  const c10::cuda::CUDAGuard guard(a.mu.device());
  if (a.shape.cols == 0) {
    if (a.kl.defined()) a.kl.zero_();
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.mu.scalar_type(),
                                  "vae_ext_forward_cuda", [&] { launch_forward<scalar_t>(a); });
}

void backward_cuda(const BackwardArgs& a) {
  if (a.shape.rows == 0 || a.shape.cols == 0) return;
  const c10::cuda::CUDAGuard guard(a.mu.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.mu.scalar_type(),
                                  "vae_ext_backward_cuda", [&] { launch_backward<scalar_t>(a); });
}

}  // namespace cuda_kernels
}  // namespace vae_ext

TORCH_LIBRARY_IMPL(vae_ext, CUDA, m) {
  using vae_ext::cuda_kernels::backward_cuda;
  using vae_ext::cuda_kernels::forward_cuda;
  vae_ext::OpFront<forward_cuda, backward_cuda>::register_kernels(m);
}
