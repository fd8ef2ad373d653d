// Per-element Gaussian KL, reparameterization and their gradients (design.md section 2),
// shared by the CPU and CUDA kernels. T is the compute type: float for float, half and
// bfloat16 inputs, double for double.
#pragma once

#include <cmath>

#include "macros.h"

namespace vae_ext {

// KL(N(mu, e^lv) || N(pmu, e^plv)) = 1/2 d^2 e^-plv + 1/2 expm1(lv - plv) - 1/2 (lv - plv),
// d = mu - pmu. The standard prior is pmu = plv = 0, for which exp(-0) = 1 exactly, so
// kl_standard and kl_general agree to the bit.
template <typename T>
VAE_HD T kl_standard(T mu, T lv) {
  using std::expm1;
  return T(0.5) * (mu * mu + (expm1(lv) - lv));
}

template <typename T>
VAE_HD T kl_general(T mu, T lv, T pmu, T plv) {
  using std::exp;
  using std::expm1;
  const T d = mu - pmu;
  const T dlv = lv - plv;
  return T(0.5) * (d * d * exp(-plv) + (expm1(dlv) - dlv));
}

// Gradients of one KL element, scaled by the incoming gradient g of the per-sample KL.
// The prior mean's gradient is -mu.
template <typename T>
struct KlGrad {
  T mu, lv, plv;
};

template <typename T>
VAE_HD KlGrad<T> kl_grad_standard(T g, T mu, T lv) {
  using std::expm1;
  const T g_lv = g * T(0.5) * expm1(lv);
  const T g_mu = g * mu;
  return {g_mu, g_lv, -g * T(0.5) * (expm1(lv) + mu * mu)};
}

// d/dplv = 1/2 (1 - (e^lv + d^2) e^-plv) = -1/2 (expm1(lv - plv) + d^2 e^-plv): the form
// that does not cancel when q is close to p.
template <typename T>
VAE_HD KlGrad<T> kl_grad_general(T g, T mu, T lv, T pmu, T plv) {
  using std::exp;
  using std::expm1;
  const T d = mu - pmu;
  const T inv_var_p = exp(-plv);
  const T em1 = expm1(lv - plv);
  const T g_mu = g * d * inv_var_p;
  return {g_mu, g * T(0.5) * em1, -g * T(0.5) * (em1 + d * d * inv_var_p)};
}

// z = mu + eps * e^(lv/2)
template <typename T>
VAE_HD T reparam(T mu, T lv, T eps) {
  using std::exp;
  return mu + eps * exp(T(0.5) * lv);
}

// dz/dlv = 1/2 eps e^(lv/2)
template <typename T>
VAE_HD T reparam_grad_logvar(T g_z, T lv, T eps) {
  using std::exp;
  return g_z * (T(0.5) * eps * exp(T(0.5) * lv));
}

}  // namespace vae_ext
