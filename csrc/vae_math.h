// Per-element Gaussian KL, reparameterization and their gradients (docs/design.md section 2),
// shared by the CPU and CUDA kernels. T is the compute type: float for float, half and
// bfloat16 inputs, double for double.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"
#include "philox.h"

namespace vae_ext {

// ----------------------------------------------------------------------------------------
// exp and expm1 for float and double, as plain IEEE arithmetic: the CPU kernels vectorize
// them, the CUDA kernels run the same steps and vae_ext/reference.py repeats them in tensor
// ops, so z and the KL terms agree to the bit across devices (no libm call: those differ
// between platforms). x = n ln2 + r, |r| <= ln2/2; expm1(r) by its Taylor series to r^7
// (float, truncation < 0.2 ulp) or r^13 (double, < 0.1 ulp); 2^n applied as two factors so
// that results down to the subnormal range stay exact.

template <typename T>
struct ExpParts {
  T em1_r;               // expm1(r)
  T scale_lo, scale_hi;  // 2^n = scale_lo * scale_hi
  T n;
};

VAE_HD double bits_double(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
#endif
}

// x clamped to [-104, 89] (beyond, exp is 0 or inf in float); NaN is handled by the callers.
VAE_HD ExpParts<float> exp_parts(float x) {
  float c = x > -104.0f ? x : -104.0f;
  c = c < 89.0f ? c : 89.0f;
  // Round to nearest by the 1.5 * 2^23 shift (|c / ln2| < 2^22).
  const float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // ln 2 = 0.693359375 - 2.12194440e-4; n * 0.693359375 is exact.
  const float r = (c - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.98412698e-4f;  // 1/7!
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t n_lo = ni >> 1;
  return {r + (r * r) * p, bits_float(static_cast<uint32_t>(n_lo + 127) << 23),
          bits_float(static_cast<uint32_t>(ni - n_lo + 127) << 23), n};
}

// x clamped to [-746, 710] (beyond, exp is 0 or inf in double).
VAE_HD ExpParts<double> exp_parts(double x) {
  double c = x > -746.0 ? x : -746.0;
  c = c < 710.0 ? c : 710.0;
  // Round to nearest by the 1.5 * 2^52 shift.
  const double n = (c * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;
  // ln 2 = ln2_hi + ln2_lo, ln2_hi with 21 trailing zero bits: n * ln2_hi is exact.
  const double r = (c - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.6059043836821614599e-10;  // 1/13!
  p = p * r + 2.0876756987868098979e-9;
  p = p * r + 2.5052108385441718775e-8;
  p = p * r + 2.7557319223985890653e-7;
  p = p * r + 2.7557319223985890653e-6;
  p = p * r + 2.4801587301587301587e-5;
  p = p * r + 1.9841269841269841270e-4;
  p = p * r + 1.3888888888888888889e-3;
  p = p * r + 8.3333333333333333333e-3;
  p = p * r + 4.1666666666666666667e-2;
  p = p * r + 1.6666666666666666667e-1;
  p = p * r + 0.5;
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t n_lo = ni >> 1;
  return {r + (r * r) * p, bits_double(static_cast<uint64_t>(n_lo + 1023) << 52),
          bits_double(static_cast<uint64_t>(ni - n_lo + 1023) << 52), n};
}

template <typename T>
VAE_HD T nan_or(T x, T value) {
  return x != x ? x : value;
}

template <typename T>
VAE_HD T exp_scaled(const ExpParts<T>& p) {
  return ((T(1) + p.em1_r) * p.scale_lo) * p.scale_hi;
}

// Max error (tests/test_exp_accuracy.py): 1.01 ulp (float), 1 ulp (double).
template <typename T>
VAE_HD T exp_of(T x) {
  return nan_or(x, exp_scaled(exp_parts(x)));
}

// e^(x/2) and expm1(x). The kernels need both for one logvar (sigma for z, expm1 for the KL
// and its gradients), so expm1(x) is taken from the same evaluation as e^(x/2):
// expm1(x) = e (e + 2) with e = expm1(x/2), which cancels nowhere. Max error of e^(x/2) and
// expm1(x), measured on dense samples (tests/test_exp_accuracy.py): 1.01 and 4 ulp (float),
// 1 and 4 ulp (double).
template <typename T>
struct HalfExp {
  T exp_half;
  T expm1;
};

template <typename T>
VAE_HD HalfExp<T> half_exp(T x) {
  const ExpParts<T> p = exp_parts(T(0.5) * x);
  const T exp_half = exp_scaled(p);
  const T em1_half = p.n == T(0) ? p.em1_r : exp_half - T(1);
  return {nan_or(x, exp_half), nan_or(x, em1_half * (em1_half + T(2)))};
}

// expm1(x) - x given em1 = expm1(x). The difference cancels for small |x| (a posterior close
// to the prior), so there it is the Taylor series x^2/2! + x^3/3! + ..., kept to the term
// after which the rest is below 1e-9 (float) / 1e-16 (double) of the sum for |x| < 1/4.
VAE_HD float expm1_minus_x(float x, float em1) {
  float p = 2.48015873e-5f;  // 1/8!
  p = p * x + 1.98412698e-4f;
  p = p * x + 1.38888889e-3f;
  p = p * x + 8.33333333e-3f;
  p = p * x + 4.16666667e-2f;
  p = p * x + 1.66666667e-1f;
  p = p * x + 0.5f;
  return (x < 0.25f && x > -0.25f) ? (x * x) * p : em1 - x;
}

VAE_HD double expm1_minus_x(double x, double em1) {
  double p = 2.08767569878680990e-9;  // 1/12!
  p = p * x + 2.50521083854417188e-8;
  p = p * x + 2.75573192239858907e-7;
  p = p * x + 2.75573192239858907e-6;
  p = p * x + 2.48015873015873016e-5;
  p = p * x + 1.98412698412698413e-4;
  p = p * x + 1.38888888888888889e-3;
  p = p * x + 8.33333333333333333e-3;
  p = p * x + 4.16666666666666667e-2;
  p = p * x + 1.66666666666666667e-1;
  p = p * x + 0.5;
  return (x < 0.25 && x > -0.25) ? (x * x) * p : em1 - x;
}

// ----------------------------------------------------------------------------------------

// KL(N(mu, e^lv) || N(pmu, e^plv)) = 1/2 d^2 e^-plv + 1/2 expm1(lv - plv) - 1/2 (lv - plv),
// d = mu - pmu. The standard prior is pmu = plv = 0, for which exp(-0) = 1 exactly, so
// kl_standard and kl_general agree to the bit.
template <typename T>
VAE_HD T kl_standard(T mu, T lv) {
  return T(0.5) * (mu * mu + expm1_minus_x(lv, half_exp(lv).expm1));
}

template <typename T>
VAE_HD T kl_general(T mu, T lv, T pmu, T plv) {
  const T d = mu - pmu;
  const T dlv = lv - plv;
  return T(0.5) * (d * d * exp_of(-plv) + expm1_minus_x(dlv, half_exp(dlv).expm1));
}

// Gradients of one KL element, scaled by the incoming gradient g of the per-sample KL.
// The prior mean's gradient is -mu.
template <typename T>
struct KlGrad {
  T mu, lv, plv;
};

template <typename T>
VAE_HD KlGrad<T> kl_grad_standard(T g, T mu, T lv) {
  const T em1 = half_exp(lv).expm1;
  return {g * mu, g * T(0.5) * em1, -g * T(0.5) * (em1 + mu * mu)};
}

// d/dplv = 1/2 (1 - (e^lv + d^2) e^-plv) = -1/2 (expm1(lv - plv) + d^2 e^-plv): the form
// that does not cancel when q is close to p.
template <typename T>
VAE_HD KlGrad<T> kl_grad_general(T g, T mu, T lv, T pmu, T plv) {
  const T d = mu - pmu;
  const T inv_var_p = exp_of(-plv);
  const T em1 = half_exp(lv - plv).expm1;
  const T g_mu = g * d * inv_var_p;
  return {g_mu, g * T(0.5) * em1, -g * T(0.5) * (em1 + d * d * inv_var_p)};
}

// z = mu + eps * e^(lv/2)
template <typename T>
VAE_HD T reparam(T mu, T lv, T eps) {
  return mu + eps * half_exp(lv).exp_half;
}

// dz/dlv = 1/2 eps e^(lv/2)
template <typename T>
VAE_HD T reparam_grad_logvar(T g_z, T lv, T eps) {
  return g_z * (T(0.5) * eps * half_exp(lv).exp_half);
}

}  // namespace vae_ext
