// Argument checks and the [rows, cols] view every kernel works on; shared by the CPU and
// CUDA registrations. A latent tensor [B, ...] is seen as B rows of D = prod(shape[1:])
// elements: rows may be strided (h.chunk(2, dim=1)), the elements of a row contiguous.
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

}  // namespace vae_ext
