// The arguments of a pass: each one's checks, the [rows, cols] view every kernel works on,
// and ForwardTensors / BackwardTensors, the checked arguments and allocated outputs that the
// op front (op_front.h) hands to a device's kernel. A latent tensor [B, ...] is seen as B
// rows of D = prod(shape[1:]) elements: rows may be strided (h.chunk(2, dim=1)), the
// elements of a row contiguous.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <optional>
#include <string>

namespace vae_ext {

// A tensor seen as [rows, cols]: element (b, j) is data[b * row_stride + j * col_stride]. A
// prior broadcast over the batch has row_stride 0; a scalar prior has col_stride 0 too.
template <typename T>
struct Strided {
  const T* data;
  int64_t row_stride;
  int64_t col_stride;
};

struct LatentShape {
  int64_t rows;
  int64_t cols;
};

inline LatentShape latent_shape(const at::Tensor& mu) {
  int64_t cols = 1;
  for (int64_t d = 1; d < mu.dim(); ++d) cols *= mu.size(d);
  return {mu.size(0), cols};
}

// True when dims 1.. are laid out as one contiguous block (row stride is free).
inline bool rows_are_contiguous_blocks(const at::Tensor& t) {
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= 1; --d) {
    if (t.size(d) != 1 && t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

// Returns t, or a copy of it whose rows are contiguous blocks when they are not.
inline at::Tensor as_row_blocks(const at::Tensor& t) {
  return rows_are_contiguous_blocks(t) ? t : t.contiguous();
}

inline void check_latent(const at::Tensor& mu, const char* op) {
  TORCH_CHECK_TYPE(at::isFloatingType(mu.scalar_type()), op, ": mu must be a floating-point ",
                   "tensor (float64, float32, float16 or bfloat16), got ", mu.scalar_type());
  TORCH_CHECK_VALUE(mu.dim() >= 1, op, ": mu must have a batch dimension (dim >= 1), got a ",
                    "0-d tensor");
}

inline void check_like_mu(const at::Tensor& t, const char* name, const at::Tensor& mu,
                          const char* op) {
  TORCH_CHECK_TYPE(t.scalar_type() == mu.scalar_type(), op, ": ", name, " must have mu's dtype ",
                   mu.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == mu.device(), op, ": ", name, " must be on mu's device ",
                    mu.device(), ", got ", t.device());
  TORCH_CHECK_VALUE(t.sizes() == mu.sizes(), op, ": ", name, " must have mu's shape ", mu.sizes(),
                    ", got ", t.sizes());
}

inline void check_seed(const at::Tensor& seed, const at::Tensor& mu, const char* op) {
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, op, ": seed must be an int64 tensor, got ",
                   seed.scalar_type());
  TORCH_CHECK_VALUE(seed.numel() == 1, op, ": seed must hold one element, got shape ",
                    seed.sizes());
  TORCH_CHECK_VALUE(seed.device() == mu.device(), op, ": seed must be on mu's device ", mu.device(),
                    ", got ", seed.device());
}

// A prior is a scalar (numel 1), per-latent (mu.shape[1:], optionally with a leading 1)
// or full (mu.shape). Returns it as a tensor whose [rows, cols] view is given by the
// strides filled in.
struct PriorView {
  at::Tensor tensor;
  int64_t row_stride;
  int64_t col_stride;
};

inline PriorView prior_view(const at::Tensor& p, const char* name, const at::Tensor& mu,
                            const char* op) {
  TORCH_CHECK_TYPE(p.scalar_type() == mu.scalar_type(), op, ": ", name, " must have mu's dtype ",
                   mu.scalar_type(), ", got ", p.scalar_type());
  TORCH_CHECK_VALUE(p.device() == mu.device(), op, ": ", name, " must be on mu's device ",
                    mu.device(), ", got ", p.device());
  if (p.sizes() == mu.sizes()) {
    at::Tensor t = as_row_blocks(p);
    return {t, mu.size(0) > 1 ? t.stride(0) : 0, 1};
  }
  const auto latent = mu.sizes().slice(1);
  const bool per_latent = p.sizes() == latent ||
                          (p.dim() == mu.dim() && p.size(0) == 1 && p.sizes().slice(1) == latent);
  if (per_latent) return {p.contiguous(), 0, 1};
  TORCH_CHECK_VALUE(p.numel() == 1 && p.dim() <= mu.dim(), op, ": ", name,
                    " must be a scalar, of shape mu.shape[1:] = ", latent,
                    ", or of shape mu.shape = ", mu.sizes(), "; got ", p.sizes());
  return {p.reshape({}), 0, 0};
}

template <typename T>
Strided<T> strided_rows(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.dim() >= 1 && t.size(0) > 1 ? t.stride(0) : 0, 1};
}

template <typename T>
Strided<T> strided_prior(const PriorView& p) {
  return {p.tensor.const_data_ptr<T>(), p.row_stride, p.col_stride};
}

// A kernel's view of an optional operand or output: null data when the tensor is undefined.
template <typename T>
Strided<T> rows_or_null(const at::Tensor& t) {
  return t.defined() ? strided_rows<T>(t) : Strided<T>{nullptr, 0, 0};
}

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

// The checked arguments and allocated outputs of a forward pass (z and/or the per-sample KL),
// as tensors; each device's kernel turns them into the typed pointers it reads.
struct ForwardTensors {
  LatentShape shape;
  at::Tensor mu, logvar;
  at::Tensor eps;   // undefined unless eps is given
  at::Tensor seed;  // undefined unless eps is sampled
  std::optional<PriorView> prior_mu, prior_logvar;
  at::Tensor z;   // contiguous, undefined when z is not wanted
  at::Tensor kl;  // [rows] in the compute dtype, undefined when kl is not wanted
};

// The same for a backward pass (the gradients of z and/or the KL).
struct BackwardTensors {
  LatentShape shape;
  at::Tensor grad_z;   // undefined when z has no gradient
  at::Tensor grad_kl;  // contiguous [rows] compute dtype, undefined when kl has none
  at::Tensor mu, logvar, eps, seed;
  std::optional<PriorView> prior_mu, prior_logvar;
  at::Tensor grad_mu, grad_logvar;              // contiguous, undefined when not wanted
  at::Tensor grad_prior_mu, grad_prior_logvar;  // contiguous full shape, or undefined
};

}  // namespace vae_ext
