// Philox4x32-10 counter-based generator and the normal sampler built on it.
//
// Contract (docs/design.md section 4): element i of a tensor draws normal (i & 3) of the
// Philox block with counter (i >> 2, 0) and key = the 64-bit seed. One block gives four
// uniforms u0..u3 and, by Box-Muller, normals (u0, u1) -> n0, n1 and (u2, u3) -> n2, n3.
//
// Every floating-point step below is a single IEEE-754 operation on floats (+, *, sqrt,
// and exact bit manipulation), written so no compiler may fuse or reorder them
// (build with -ffp-contract=off / --fmad=false). The stream is therefore bit-identical
// on every CPU, every SIMD width and CUDA, and the pure-PyTorch reference reproduces it
// exactly with float32 tensor ops. log and sin/cos are our own polynomials for that
// reason (a libm call differs across platforms).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace vae_ext {

struct PhiloxKey {
  uint32_t k0, k1;
};

struct Uint4 {
  uint32_t x0, x1, x2, x3;
};

struct Float4 {
  float n0, n1, n2, n3;
};

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

VAE_HD PhiloxKey philox_key(int64_t seed) {
  const uint64_t s = static_cast<uint64_t>(seed);
  return {static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32)};
}

VAE_HD Uint4 philox_round(Uint4 c, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c.x0;
  const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c.x2;
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  return {hi1 ^ c.x1 ^ k0, lo1, hi0 ^ c.x3 ^ k1, lo0};
}

// Round r uses the key bumped r times.
VAE_HD uint32_t philox_round_key0(PhiloxKey key, int round) {
  return key.k0 + static_cast<uint32_t>(round) * kPhiloxW0;
}

VAE_HD uint32_t philox_round_key1(PhiloxKey key, int round) {
  return key.k1 + static_cast<uint32_t>(round) * kPhiloxW1;
}

VAE_HD Uint4 philox4x32_10(Uint4 c, PhiloxKey key) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    c = philox_round(c, philox_round_key0(key, round), philox_round_key1(key, round));
  }
  return c;
}

VAE_HD Uint4 philox_block(PhiloxKey key, uint64_t block) {
  return philox4x32_10({static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u},
                       key);
}

VAE_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

VAE_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// (2k + 1) * 2^-24 for k = x >> 9: 2^23 evenly spaced values in (0, 1), never 0 or 1.
// Both steps are exact in float.
VAE_HD float uniform_open01(uint32_t x) {
  return static_cast<float>(static_cast<int32_t>(x >> 9)) * 0x1p-23f + 0x1p-24f;
}

// Natural log of a normal positive float (the sampler calls it on (0, 1)).
// x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log(m) = f - f^2/2 + f^3 P(f), f = m - 1.
// Max error about 1 ulp against a float64 log over (0, 1].
VAE_HD float log_positive(float x) {
  const uint32_t bits = float_bits(x);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 127);
  float m = bits_float((bits & 0x007FFFFFu) | 0x3F800000u);
  const bool high = m > 1.41421356f;
  m = high ? m * 0.5f : m;
  e = high ? e + 1.0f : e;
  const float f = m - 1.0f;
  const float f2 = f * f;
  float p = 7.0376836292e-2f;
  p = p * f + -1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f + -1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f + -1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f + -2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = f * f2 * p;
  y = y + e * -2.12194440e-4f;
  y = y + f2 * -0.5f;
  // ln 2 = 0.693359375 - 2.12194440e-4, the first part exact in 10 bits.
  return (f + y) + e * 0.693359375f;
}

// sin and cos of 2*pi*u for u in [0, 1]. t = 4u is split exactly into a quadrant q and
// a remainder r in [-1/2, 1/2], so the polynomial argument a = r * pi/2 stays in
// [-pi/4, pi/4].
VAE_HD void sincos_2pi(float u, float* s, float* c) {
  const float t = u * 4.0f;
  const float q = static_cast<float>(static_cast<int32_t>(t + 0.5f));
  const float r = t - q;
  const float a = r * 1.57079632679489662f;
  const float a2 = a * a;
  float ps = -1.9515295891e-4f;
  ps = ps * a2 + 8.3321608736e-3f;
  ps = ps * a2 + -1.6666654611e-1f;
  const float sin_a = a + a * a2 * ps;
  float pc = 2.443315711809948e-5f;
  pc = pc * a2 + -1.388731625493765e-3f;
  pc = pc * a2 + 4.166664568298827e-2f;
  const float cos_a = (1.0f + a2 * -0.5f) + a2 * a2 * pc;
  const int quadrant = static_cast<int>(q) & 3;
  const float sin_abs = (quadrant & 1) ? cos_a : sin_a;
  const float cos_abs = (quadrant & 1) ? sin_a : cos_a;
  *s = (quadrant & 2) ? -sin_abs : sin_abs;
  *c = ((quadrant + 1) & 2) ? -cos_abs : cos_abs;
}

VAE_HD void box_muller(uint32_t x_radius, uint32_t x_angle, float* n_cos, float* n_sin) {
  const float radius = sqrtf(-2.0f * log_positive(uniform_open01(x_radius)));
  float s, c;
  sincos_2pi(uniform_open01(x_angle), &s, &c);
  *n_cos = radius * c;
  *n_sin = radius * s;
}

// The four standard normals of Philox block `block` (elements 4*block .. 4*block + 3).
VAE_HD Float4 normal_block(PhiloxKey key, uint64_t block) {
  const Uint4 x = philox_block(key, block);
  Float4 n;
  box_muller(x.x0, x.x1, &n.n0, &n.n1);
  box_muller(x.x2, x.x3, &n.n2, &n.n3);
  return n;
}

VAE_HD float normal_at(PhiloxKey key, uint64_t index) {
  const Float4 n = normal_block(key, index >> 2);
  switch (index & 3) {
    case 0: return n.n0;
    case 1: return n.n1;
    case 2: return n.n2;
    default: return n.n3;
  }
}

}  // namespace vae_ext
