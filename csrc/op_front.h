// The device-independent half of every op: check the arguments, build the [rows, cols]
// views, allocate the outputs, and hand a ForwardTensors / BackwardTensors (op_args.h) to the
// device's kernel. cpu/ and cuda/ instantiate OpFront with their two kernels and register it.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "op_args.h"

namespace vae_ext {

using OptTensor = std::optional<at::Tensor>;

inline at::ScalarType compute_dtype(const at::Tensor& mu) {
  return at::toOpMathType(mu.scalar_type());
}

// The view of an optional prior argument, checked; nullopt when absent.
inline std::optional<PriorView> checked_prior(const OptTensor& p, const char* name,
                                              const at::Tensor& mu, const char* op) {
  if (!p.has_value() || !p->defined()) return std::nullopt;
  return prior_view(*p, name, mu, op);
}

inline at::Tensor defined_or_empty(const OptTensor& t) { return t.has_value() ? *t : at::Tensor(); }

// Checks shared by every op: mu, logvar, and the source of the sample's noise: eps or seed,
// never both (either could rebuild z: ambiguous), and one of them when the op needs a sample.
inline void check_inputs(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                         const at::Tensor& seed, bool needs_sample, const char* op) {
  check_latent(mu, op);
  check_like_mu(logvar, "logvar", mu, op);
  TORCH_CHECK_VALUE(!(eps.defined() && seed.defined()), op,
                    ": eps and seed are both given; pass one of them, not both");
  TORCH_CHECK_VALUE(!needs_sample || eps.defined() || seed.defined(), op,
                    ": pass exactly one of eps and seed (the noise of the sample, or the seed ",
                    "that regenerates it)");
  if (eps.defined()) check_like_mu(eps, "eps", mu, op);
  if (seed.defined()) check_seed(seed, mu, op);
}

template <void (*Forward)(const ForwardTensors&), void (*Backward)(const BackwardTensors&)>
struct OpFront {
  static ForwardTensors forward_tensors(const at::Tensor& mu, const at::Tensor& logvar,
                                        const at::Tensor& eps, const at::Tensor& seed,
                                        const OptTensor& prior_mu, const OptTensor& prior_logvar,
                                        bool want_z, bool want_kl, const char* op) {
    check_inputs(mu, logvar, eps, seed, want_z, op);
    ForwardTensors a;
    a.shape = latent_shape(mu);
    a.mu = as_row_blocks(mu);
    a.logvar = as_row_blocks(logvar);
    if (eps.defined()) a.eps = as_row_blocks(eps);
    a.seed = seed;
    a.prior_mu = checked_prior(prior_mu, "prior_mu", mu, op);
    a.prior_logvar = checked_prior(prior_logvar, "prior_logvar", mu, op);
    if (want_z) a.z = at::empty(mu.sizes(), mu.options());
    if (want_kl) a.kl = at::empty({a.shape.rows}, mu.options().dtype(compute_dtype(mu)));
    return a;
  }

  static at::Tensor reparameterize(const at::Tensor& mu, const at::Tensor& logvar,
                                   const at::Tensor& eps) {
    const auto a = forward_tensors(mu, logvar, eps, {}, {}, {}, true, false, "reparameterize");
    Forward(a);
    return a.z;
  }

  static at::Tensor reparameterize_sampled(const at::Tensor& mu, const at::Tensor& logvar,
                                           const at::Tensor& seed) {
    const auto a =
        forward_tensors(mu, logvar, {}, seed, {}, {}, true, false, "reparameterize_sampled");
    Forward(a);
    return a.z;
  }

  static at::Tensor gaussian_kl(const at::Tensor& mu, const at::Tensor& logvar,
                                const OptTensor& prior_mu, const OptTensor& prior_logvar) {
    const auto a =
        forward_tensors(mu, logvar, {}, {}, prior_mu, prior_logvar, false, true, "gaussian_kl");
    Forward(a);
    return a.kl;
  }

  static std::tuple<at::Tensor, at::Tensor> reparameterize_kl(
      const at::Tensor& mu, const at::Tensor& logvar, const OptTensor& eps, const OptTensor& seed,
      const OptTensor& prior_mu, const OptTensor& prior_logvar) {
    const auto a = forward_tensors(mu, logvar, defined_or_empty(eps), defined_or_empty(seed),
                                   prior_mu, prior_logvar, true, true, "reparameterize_kl");
    Forward(a);
    return {a.z, a.kl};
  }

  static BackwardTensors backward_tensors(const OptTensor& grad_z, const OptTensor& grad_kl,
                                          const at::Tensor& mu, const at::Tensor& logvar,
                                          const OptTensor& eps, const OptTensor& seed,
                                          const OptTensor& prior_mu, const OptTensor& prior_logvar,
                                          bool want_grad_mu, bool prior_grads, const char* op) {
    BackwardTensors a;
    a.eps = defined_or_empty(eps);
    a.seed = defined_or_empty(seed);
    const at::Tensor gz = defined_or_empty(grad_z);
    check_inputs(mu, logvar, a.eps, a.seed, gz.defined(), op);
    a.shape = latent_shape(mu);
    a.mu = as_row_blocks(mu);
    a.logvar = as_row_blocks(logvar);
    if (a.eps.defined()) a.eps = as_row_blocks(a.eps);
    if (gz.defined()) {
      check_like_mu(gz, "grad_z", mu, op);
      a.grad_z = as_row_blocks(gz);
    }
    const at::Tensor gk = defined_or_empty(grad_kl);
    if (gk.defined()) {
      TORCH_CHECK_VALUE(gk.dim() == 1 && gk.size(0) == a.shape.rows, op,
                        ": grad_kl must have shape [", a.shape.rows, "], got ", gk.sizes());
      TORCH_CHECK_VALUE(gk.device() == mu.device(), op, ": grad_kl must be on mu's device");
      a.grad_kl = gk.to(compute_dtype(mu)).contiguous();
    }
    a.prior_mu = checked_prior(prior_mu, "prior_mu", mu, op);
    a.prior_logvar = checked_prior(prior_logvar, "prior_logvar", mu, op);
    const auto options = mu.options();
    if (want_grad_mu) a.grad_mu = at::empty(mu.sizes(), options);
    a.grad_logvar = at::empty(mu.sizes(), options);
    if (prior_grads) {
      a.grad_prior_mu = at::empty(mu.sizes(), options);
      a.grad_prior_logvar = at::empty(mu.sizes(), options);
    }
    return a;
  }

  static at::Tensor reparameterize_backward(const at::Tensor& grad_z, const at::Tensor& logvar,
                                            const OptTensor& eps, const OptTensor& seed) {
    // mu does not enter dz/dlogvar; logvar stands in for it in the shared checks.
    const auto a = backward_tensors(grad_z, {}, logvar, logvar, eps, seed, {}, {}, false, false,
                                    "reparameterize_backward");
    Backward(a);
    return a.grad_logvar;
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> reparameterize_kl_backward(
      const OptTensor& grad_z, const OptTensor& grad_kl, const at::Tensor& mu,
      const at::Tensor& logvar, const OptTensor& eps, const OptTensor& seed,
      const OptTensor& prior_mu, const OptTensor& prior_logvar, bool prior_grads) {
    const auto a = backward_tensors(grad_z, grad_kl, mu, logvar, eps, seed, prior_mu, prior_logvar,
                                    true, prior_grads, "reparameterize_kl_backward");
    Backward(a);
    if (prior_grads) return {a.grad_mu, a.grad_logvar, a.grad_prior_mu, a.grad_prior_logvar};
    return {a.grad_mu, a.grad_logvar, at::empty({0}, mu.options()), at::empty({0}, mu.options())};
  }

  static void register_kernels(torch::Library& m) {
    m.impl("reparameterize", &reparameterize);
    m.impl("reparameterize_sampled", &reparameterize_sampled);
    m.impl("reparameterize_backward", &reparameterize_backward);
    m.impl("gaussian_kl", &gaussian_kl);
    m.impl("reparameterize_kl", &reparameterize_kl);
    m.impl("reparameterize_kl_backward", &reparameterize_kl_backward);
  }
};

}  // namespace vae_ext
