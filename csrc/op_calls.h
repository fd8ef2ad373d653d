// Typed calls of every vae_ext op through torch's dispatcher, one function per schema of
// csrc/ops.cpp. Each looks its op up once: findSchemaOrThrow finds it by name, and typed<>()
// checks the C++ signature against the registered schema (it throws on a mismatch). The call
// dispatches on the inputs' device and on autograd like torch.ops.vae_ext.<op>.
//
// Used by csrc/autograd.cpp (below its Autograd kernels), the native tests and a program that
// links the installed library (installed as <vae_ext/op_calls.h>; docs/cpp.md).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

namespace vae_ext {
namespace op_calls {

using OptTensor = std::optional<at::Tensor>;
using Grads4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <class Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

inline at::Tensor reparameterize(const at::Tensor& mu, const at::Tensor& logvar,
                                 const at::Tensor& eps) {
  static const auto op =
      typed_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
          "vae_ext::reparameterize");
  return op.call(mu, logvar, eps);
}

inline at::Tensor reparameterize_sampled(const at::Tensor& mu, const at::Tensor& logvar,
                                         const at::Tensor& seed) {
  static const auto op =
      typed_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
          "vae_ext::reparameterize_sampled");
  return op.call(mu, logvar, seed);
}

inline at::Tensor reparameterize_backward(const at::Tensor& grad_z, const at::Tensor& logvar,
                                          const OptTensor& eps, const OptTensor& seed) {
  static const auto op = typed_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                             const OptTensor&)>("vae_ext::reparameterize_backward");
  return op.call(grad_z, logvar, eps, seed);
}

inline at::Tensor gaussian_kl(const at::Tensor& mu, const at::Tensor& logvar,
                              const OptTensor& prior_mu = std::nullopt,
                              const OptTensor& prior_logvar = std::nullopt) {
  static const auto op = typed_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                             const OptTensor&)>("vae_ext::gaussian_kl");
  return op.call(mu, logvar, prior_mu, prior_logvar);
}

// Exactly one of eps and seed. Returns (z, kl).
inline std::tuple<at::Tensor, at::Tensor> reparameterize_kl(
    const at::Tensor& mu, const at::Tensor& logvar, const OptTensor& eps, const OptTensor& seed,
    const OptTensor& prior_mu = std::nullopt, const OptTensor& prior_logvar = std::nullopt) {
  static const auto op = typed_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
      const OptTensor&)>("vae_ext::reparameterize_kl");
  return op.call(mu, logvar, eps, seed, prior_mu, prior_logvar);
}

// Returns (grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar).
inline Grads4 reparameterize_kl_backward(const OptTensor& grad_z, const OptTensor& grad_kl,
                                         const at::Tensor& mu, const at::Tensor& logvar,
                                         const OptTensor& eps, const OptTensor& seed,
                                         const OptTensor& prior_mu, const OptTensor& prior_logvar,
                                         bool prior_grads) {
  static const auto op =
      typed_op<Grads4(const OptTensor&, const OptTensor&, const at::Tensor&, const at::Tensor&,
                      const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                      bool)>("vae_ext::reparameterize_kl_backward");
  return op.call(grad_z, grad_kl, mu, logvar, eps, seed, prior_mu, prior_logvar, prior_grads);
}

}  // namespace op_calls
}  // namespace vae_ext
