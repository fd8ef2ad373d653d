// CPU kernels: one pass over the rows forward (z and the per-sample KL) and one backward.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../op_front.h"
#include "../philox.h"
#include "../vae_math.h"

namespace vae_ext {
namespace {

constexpr int64_t kChunk = 256;  // elements of a row handled per step (eps buffer size)
constexpr int kLanes = 8;        // independent partial sums of a row's KL

// Standard normals for the flat indices [first, first + n) of the sampled tensor.
void fill_normals(PhiloxKey key, uint64_t first, int64_t n, float* out) {
  uint64_t index = first;
  const uint64_t end = first + static_cast<uint64_t>(n);
  while (index < end) {
    const Float4 block = normal_block(key, index >> 2);
    const float values[4] = {block.n0, block.n1, block.n2, block.n3};
    for (uint64_t k = index & 3; k < 4 && index < end; ++k, ++index) *out++ = values[k];
  }
}

template <typename T>
T sum_lanes(const T (&lanes)[kLanes]) {
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

PhiloxKey seed_key(const at::Tensor& seed) {
  return philox_key(*seed.const_data_ptr<int64_t>());
}

// Rows per parallel task: enough elements to amortise a task, whole rows so the per-row KL
// needs no cross-thread reduction and is the same for any thread count.
int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(cols, 1));
}

template <typename scalar_t>
void forward_typed(const ForwardArgs& a) {
  using T = at::opmath_type<scalar_t>;
  const int64_t cols = a.shape.cols;
  const auto mu = strided_rows<scalar_t>(a.mu);
  const auto lv = strided_rows<scalar_t>(a.logvar);
  const bool given_eps = a.eps.defined();
  const auto eps = given_eps ? strided_rows<scalar_t>(a.eps) : Strided<scalar_t>{};
  const PhiloxKey key = a.seed.defined() ? seed_key(a.seed) : PhiloxKey{};
  const bool has_prior = a.prior_mu.has_value() || a.prior_logvar.has_value();
  const scalar_t zero(0);
  const auto pmu = a.prior_mu ? strided_prior<scalar_t>(*a.prior_mu) : Strided<scalar_t>{&zero, 0, 0};
  const auto plv =
      a.prior_logvar ? strided_prior<scalar_t>(*a.prior_logvar) : Strided<scalar_t>{&zero, 0, 0};
  scalar_t* z = a.z.defined() ? a.z.mutable_data_ptr<scalar_t>() : nullptr;
  T* kl = a.kl.defined() ? a.kl.mutable_data_ptr<T>() : nullptr;

  at::parallel_for(0, a.shape.rows, row_grain(cols), [&](int64_t b0, int64_t b1) {
    float normals[kChunk];
    for (int64_t b = b0; b < b1; ++b) {
      T lanes[kLanes] = {};
      for (int64_t j0 = 0; j0 < cols; j0 += kChunk) {
        const int64_t n = std::min(kChunk, cols - j0);
        if (z != nullptr && !given_eps) {
          fill_normals(key, static_cast<uint64_t>(b * cols + j0), n, normals);
        }
        for (int64_t k = 0; k < n; ++k) {
          const int64_t j = j0 + k;
          const T m = mu.at(b, j), l = lv.at(b, j);
          if (z != nullptr) {
            const T e = given_eps ? T(eps.at(b, j)) : T(normals[k]);
            z[b * cols + j] = static_cast<scalar_t>(reparam(m, l, e));
          }
          if (kl != nullptr) {
            lanes[k % kLanes] +=
                has_prior ? kl_general<T>(m, l, pmu.at(b, j), plv.at(b, j)) : kl_standard(m, l);
          }
        }
      }
      if (kl != nullptr) kl[b] = sum_lanes(lanes);
    }
  });
}

template <typename scalar_t>
void backward_typed(const BackwardArgs& a) {
  using T = at::opmath_type<scalar_t>;
  const int64_t cols = a.shape.cols;
  const auto mu = strided_rows<scalar_t>(a.mu);
  const auto lv = strided_rows<scalar_t>(a.logvar);
  const bool has_gz = a.grad_z.defined();
  const auto gz = has_gz ? strided_rows<scalar_t>(a.grad_z) : Strided<scalar_t>{};
  const bool given_eps = a.eps.defined();
  const auto eps = given_eps ? strided_rows<scalar_t>(a.eps) : Strided<scalar_t>{};
  const PhiloxKey key = a.seed.defined() ? seed_key(a.seed) : PhiloxKey{};
  const T* gkl = a.grad_kl.defined() ? a.grad_kl.const_data_ptr<T>() : nullptr;
  const bool has_prior = a.prior_mu.has_value() || a.prior_logvar.has_value();
  const scalar_t zero(0);
  const auto pmu = a.prior_mu ? strided_prior<scalar_t>(*a.prior_mu) : Strided<scalar_t>{&zero, 0, 0};
  const auto plv =
      a.prior_logvar ? strided_prior<scalar_t>(*a.prior_logvar) : Strided<scalar_t>{&zero, 0, 0};
  scalar_t* g_mu = a.grad_mu.defined() ? a.grad_mu.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* g_lv = a.grad_logvar.mutable_data_ptr<scalar_t>();
  scalar_t* g_pmu = a.grad_prior_mu.defined() ? a.grad_prior_mu.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* g_plv =
      a.grad_prior_logvar.defined() ? a.grad_prior_logvar.mutable_data_ptr<scalar_t>() : nullptr;

  at::parallel_for(0, a.shape.rows, row_grain(cols), [&](int64_t b0, int64_t b1) {
    float normals[kChunk];
    for (int64_t b = b0; b < b1; ++b) {
      const T g = gkl != nullptr ? gkl[b] : T(0);
      for (int64_t j0 = 0; j0 < cols; j0 += kChunk) {
        const int64_t n = std::min(kChunk, cols - j0);
        if (has_gz && !given_eps) fill_normals(key, static_cast<uint64_t>(b * cols + j0), n, normals);
        for (int64_t k = 0; k < n; ++k) {
          const int64_t j = j0 + k, out = b * cols + j;
          const T m = mu.at(b, j), l = lv.at(b, j);
          T d_mu(0), d_lv(0);
          if (has_gz) {
            const T dz = gz.at(b, j);
            const T e = given_eps ? T(eps.at(b, j)) : T(normals[k]);
            d_mu = dz;
            d_lv = reparam_grad_logvar(dz, l, e);
          }
          if (gkl != nullptr) {
            const KlGrad<T> k_grad = has_prior ? kl_grad_general<T>(g, m, l, pmu.at(b, j), plv.at(b, j))
                                               : kl_grad_standard(g, m, l);
            d_mu += k_grad.mu;
            d_lv += k_grad.lv;
            if (g_pmu != nullptr) {
              g_pmu[out] = static_cast<scalar_t>(-k_grad.mu);
              g_plv[out] = static_cast<scalar_t>(k_grad.plv);
            }
          } else if (g_pmu != nullptr) {
            g_pmu[out] = scalar_t(0);
            g_plv[out] = scalar_t(0);
          }
          if (g_mu != nullptr) g_mu[out] = static_cast<scalar_t>(d_mu);
          g_lv[out] = static_cast<scalar_t>(d_lv);
        }
      }
    }
  });
}

void forward_cpu(const ForwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.mu.scalar_type(), "vae_ext_forward",
                                  [&] { forward_typed<scalar_t>(a); });
}

void backward_cpu(const BackwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.mu.scalar_type(),
                                  "vae_ext_backward", [&] { backward_typed<scalar_t>(a); });
}

}  // namespace
}  // namespace vae_ext

TORCH_LIBRARY_IMPL(vae_ext, CPU, m) {
  vae_ext::OpFront<vae_ext::forward_cpu, vae_ext::backward_cpu>::register_kernels(m);
}
