// CPU kernels: one pass over the rows forward (z and the per-sample KL) and one backward.
//
// Each row is processed in chunks of kChunk elements: inputs are staged as compute-type
// arrays (a pointer into the tensor when no conversion is needed), the sampler fills a
// chunk of normals, and one branch-free loop does the math of csrc/vae_math.h. Every loop
// is plain C++ that GCC vectorizes; the entry points are compiled for several ISAs
// (target_clones) and picked at load time. Rows are never split across threads, and the
// per-row KL is added up in the order of csrc/row_sum.h: a leaf's rows of 16 lanes are one
// SIMD add each, so the fixed order costs about what a plain sum would.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "../op_front.h"
#include "../philox.h"
#include "../row_sum.h"
#include "../vae_math.h"
#include "philox_simd.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VAE_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VAE_CPU_CLONES
#endif
#define VAE_INLINE inline __attribute__((always_inline))
// Lambdas too must be inlined into each ISA clone, or they run the baseline-ISA copy.
#define VAE_LAMBDA_INLINE __attribute__((always_inline))

namespace vae_ext {
namespace {

constexpr int64_t kChunk = 512;  // a multiple of kSumLeaf; all chunk buffers fit in L1
static_assert(kChunk % kSumLeaf == 0, "chunks start on a leaf of the KL sum");
constexpr int64_t kBlocks = kChunk / 4 + 16;  // Philox blocks covering kChunk elements, padded
                                              // to whole SIMD vectors

// The compute type of storage type S: float for half, bfloat16 and float, double for double
// (ATen's opmath type, as on CUDA and in op_front.h's compute_dtype).
template <typename S>
using Compute = at::opmath_type<S>;

// ------------------------------------------------------------------ element conversions

VAE_INLINE float to_compute(float x) { return x; }
VAE_INLINE double to_compute(double x) { return x; }
VAE_INLINE float to_compute(c10::Half x) { return static_cast<float>(x); }
VAE_INLINE float to_compute(c10::BFloat16 x) {
  return bits_float(static_cast<uint32_t>(x.x) << 16);
}

template <typename S>
VAE_INLINE S from_compute(Compute<S> x) {
  return static_cast<S>(x);
}

// Round to nearest even, NaN kept a (quiet) NaN; branch-free so it vectorizes.
template <>
VAE_INLINE c10::BFloat16 from_compute<c10::BFloat16>(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint16_t bits = static_cast<uint16_t>(x != x ? 0x7FC0u : rounded);
  return c10::BFloat16(bits, c10::BFloat16::from_bits());
}

// The n elements of row b starting at column j0, as compute-type values: a pointer into
// the tensor when it already holds them contiguously, else converted into `buffer`.
template <typename S>
VAE_INLINE const Compute<S>* stage(const Strided<S>& t, int64_t b, int64_t j0, int64_t n,
                                   Compute<S>* buffer) {
  const S* src = t.data + b * t.row_stride + j0 * t.col_stride;
  if constexpr (std::is_same_v<S, Compute<S>>) {
    if (t.col_stride == 1) return src;
  }
  if (t.col_stride == 0) {
    std::fill(buffer, buffer + n, to_compute(*src));
  } else {
    for (int64_t i = 0; i < n; ++i) buffer[i] = to_compute(src[i]);
  }
  return buffer;
}

// Where to compute an output chunk: straight into the tensor when no conversion is needed.
template <typename S>
VAE_INLINE Compute<S>* output_chunk(S* out, Compute<S>* buffer) {
  if constexpr (std::is_same_v<S, Compute<S>>) {
    if (out != nullptr) return out;
  }
  return buffer;
}

template <typename S>
VAE_INLINE void store(const Compute<S>* values, int64_t n, S* out) {
  if (static_cast<const void*>(values) == static_cast<const void*>(out)) return;
  for (int64_t i = 0; i < n; ++i) out[i] = from_compute<S>(values[i]);
}

// ------------------------------------------------------------------ sampler

// The standard normals of flat indices [first, first + n), n <= kChunk: Philox for the
// blocks covering them (SIMD, csrc/cpu/philox_simd.h), then Box-Muller in a loop the
// compiler vectorizes.
VAE_CPU_CLONES void box_muller_blocks(int64_t blocks, const uint32_t* x0, const uint32_t* x1,
                                      const uint32_t* x2, const uint32_t* x3, float* flat) {
  alignas(64) float n0[kBlocks], n1[kBlocks], n2[kBlocks], n3[kBlocks];
  for (int64_t k = 0; k < blocks; ++k) {
    box_muller(x0[k], x1[k], &n0[k], &n1[k]);
    box_muller(x2[k], x3[k], &n2[k], &n3[k]);
  }
  for (int64_t k = 0; k < blocks; ++k) {
    flat[4 * k] = n0[k];
    flat[4 * k + 1] = n1[k];
    flat[4 * k + 2] = n2[k];
    flat[4 * k + 3] = n3[k];
  }
}

void fill_normals(PhiloxKey key, uint64_t first, int64_t n, float* out) {
  const uint64_t block0 = first >> 2;
  const int64_t blocks = static_cast<int64_t>(((first + n + 3) >> 2) - block0);
  alignas(64) uint32_t x0[kBlocks], x1[kBlocks], x2[kBlocks], x3[kBlocks];
  cpu::philox_blocks(key, block0, blocks, x0, x1, x2, x3);
  alignas(64) float flat[4 * kBlocks];
  box_muller_blocks(blocks, x0, x1, x2, x3, flat);
  std::memcpy(out, flat + (first & 3), static_cast<size_t>(n) * sizeof(float));
}

template <typename T>
VAE_INLINE void fill_normals_as(PhiloxKey key, uint64_t first, int64_t n, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    fill_normals(key, first, n, out);
  } else {
    alignas(64) float normals[kChunk];
    fill_normals(key, first, n, normals);
    for (int64_t i = 0; i < n; ++i) out[i] = normals[i];
  }
}

// Walks rows [b0, b1) in tiles of at most kChunk elements of the flat index space: several
// short rows at once, or one piece of a long row. With `sample`, the tile's normals come from
// one fill_normals call (short rows would waste most of a SIMD batch each). visit(b, j0, n,
// normals) sees every row piece in order; normals is null without `sample`.
template <typename T, typename Visit>
VAE_INLINE void for_each_tile(int64_t cols, int64_t b0, int64_t b1, bool sample, PhiloxKey key,
                              Visit&& visit) {
  alignas(64) T normals[kChunk];
  const int64_t rows_per_tile = cols >= kChunk ? 1 : kChunk / std::max<int64_t>(cols, 1);
  for (int64_t t0 = b0; t0 < b1; t0 += rows_per_tile) {
    const int64_t t1 = std::min(b1, t0 + rows_per_tile);
    for (int64_t j0 = 0; j0 < cols; j0 += kChunk) {
      const int64_t n = std::min(kChunk, cols - j0);
      if (sample)
        fill_normals_as(key, static_cast<uint64_t>(t0 * cols + j0), (t1 - t0) * n, normals);
      for (int64_t b = t0; b < t1; ++b) visit(b, j0, n, sample ? normals + (b - t0) * n : nullptr);
    }
  }
}

// The KL sum of a row piece's terms (terms[0, n), n <= kChunk, the piece starting on a leaf
// boundary), leaf by leaf into `sum` (csrc/row_sum.h). terms is a kChunk buffer: the pads
// are written into it. Rows of a leaf that are all pad are skipped (adding +0 is exact).
template <typename T, int kDepth>
VAE_INLINE void push_leaf_sums(T* terms, int64_t n, PairwiseSum<T, kDepth>& sum) {
  constexpr int L = kSumLanes;
  for (int64_t f = 0; f < n; f += kSumLeaf) {
    T* x = terms + f;
    const int64_t m = std::min<int64_t>(kSumLeaf, n - f);
    alignas(64) T c[L];
    if (m > 4 * L) {
      std::fill(x + m, x + 8 * L, T(0));
      for (int q = 0; q < L; ++q) {
        c[q] = ((x[q] + x[L + q]) + (x[2 * L + q] + x[3 * L + q])) +
               ((x[4 * L + q] + x[5 * L + q]) + (x[6 * L + q] + x[7 * L + q]));
      }
    } else if (m > 2 * L) {
      std::fill(x + m, x + 4 * L, T(0));
      for (int q = 0; q < L; ++q) c[q] = (x[q] + x[L + q]) + (x[2 * L + q] + x[3 * L + q]);
    } else if (m > L) {
      std::fill(x + m, x + 2 * L, T(0));
      for (int q = 0; q < L; ++q) c[q] = x[q] + x[L + q];
    } else {
      std::fill(x + m, x + L, T(0));
      for (int q = 0; q < L; ++q) c[q] = x[q];
    }
    sum.push(sum_lanes(c));
  }
}

// ------------------------------------------------------------------ forward

// A forward pass as the CPU loops see it: typed pointers and strides of ForwardTensors
// (op_args.h), and the Philox key of a sampled eps.
template <typename S>
struct ForwardPointers {
  int64_t cols;
  Strided<S> mu, logvar, eps, prior_mu, prior_logvar;
  bool sampled;
  PhiloxKey key;
  bool want_z, want_kl;  // not z != nullptr: an empty tensor's data pointer may be null
  S* z;
  Compute<S>* kl;
};

// One loop for z and the KL, so e^(lv/2) is evaluated once for both (vae_math.h).
template <typename T, bool kZ, bool kKl, bool kPrior>
VAE_INLINE void forward_math(int64_t n, const T* __restrict m, const T* __restrict l,
                             const T* __restrict e, const T* __restrict pm, const T* __restrict pl,
                             T* __restrict z, T* __restrict kl) {
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (kZ) z[i] = reparam(m[i], l[i], e[i]);
    if constexpr (kKl) {
      kl[i] = kPrior ? kl_general(m[i], l[i], pm[i], pl[i]) : kl_standard(m[i], l[i]);
    }
  }
}

template <typename S, bool kZ, bool kKl, bool kPrior>
VAE_INLINE void forward_rows(const ForwardPointers<S>& v, int64_t b0, int64_t b1) {
  using T = Compute<S>;
  if (v.cols == 0) {
    if constexpr (kKl) std::fill(v.kl + b0, v.kl + b1, T(0));
    return;
  }
  alignas(64) T m_buf[kChunk], l_buf[kChunk], e_buf[kChunk], pm_buf[kChunk], pl_buf[kChunk];
  alignas(64) T z_buf[kChunk], kl_buf[kChunk];
  PairwiseSum<T, 32> row_kl;  // rows up to 2^39 elements
  const bool sample = kZ && v.sampled;
  for_each_tile<T>(v.cols, b0, b1, sample, v.key,
                   [&](int64_t b, int64_t j0, int64_t n, const T* normals) VAE_LAMBDA_INLINE {
                     if (j0 == 0) row_kl.count = 0;
                     const T* m = stage(v.mu, b, j0, n, m_buf);
                     const T* l = stage(v.logvar, b, j0, n, l_buf);
                     const T* e = sample ? normals : (kZ ? stage(v.eps, b, j0, n, e_buf) : nullptr);
                     const T* pm = kPrior ? stage(v.prior_mu, b, j0, n, pm_buf) : nullptr;
                     const T* pl = kPrior ? stage(v.prior_logvar, b, j0, n, pl_buf) : nullptr;
                     T* z = kZ ? output_chunk(v.z + b * v.cols + j0, z_buf) : nullptr;
                     forward_math<T, kZ, kKl, kPrior>(n, m, l, e, pm, pl, z, kl_buf);
                     if constexpr (kZ) store(z, n, v.z + b * v.cols + j0);
                     if constexpr (kKl) {
                       push_leaf_sums(kl_buf, n, row_kl);
                       if (j0 + n == v.cols) v.kl[b] = row_kl.total();
                     }
                   });
}

template <typename S>
VAE_INLINE void forward_rows_any(const ForwardPointers<S>& v, int64_t b0, int64_t b1) {
  const bool z = v.want_z, kl = v.want_kl;
  const bool prior = v.prior_mu.data != nullptr;
  if (z && kl) {
    prior ? forward_rows<S, true, true, true>(v, b0, b1)
          : forward_rows<S, true, true, false>(v, b0, b1);
  } else if (z) {
    forward_rows<S, true, false, false>(v, b0, b1);
  } else {
    prior ? forward_rows<S, false, true, true>(v, b0, b1)
          : forward_rows<S, false, true, false>(v, b0, b1);
  }
}

// The per-dtype entry points: float and bfloat16 are compiled once per ISA (the hot paths);
// half and double once.
VAE_CPU_CLONES void forward_rows_typed(const ForwardPointers<float>& v, int64_t b0, int64_t b1) {
  forward_rows_any(v, b0, b1);
}
VAE_CPU_CLONES void forward_rows_typed(const ForwardPointers<c10::BFloat16>& v, int64_t b0,
                                       int64_t b1) {
  forward_rows_any(v, b0, b1);
}
void forward_rows_typed(const ForwardPointers<c10::Half>& v, int64_t b0, int64_t b1) {
  forward_rows_any(v, b0, b1);
}
void forward_rows_typed(const ForwardPointers<double>& v, int64_t b0, int64_t b1) {
  forward_rows_any(v, b0, b1);
}

// ------------------------------------------------------------------ backward

// The same for a backward pass.
template <typename S>
struct BackwardPointers {
  int64_t cols;
  Strided<S> mu, logvar, eps, grad_z, prior_mu, prior_logvar;
  bool sampled;
  PhiloxKey key;
  bool has_grad_z;
  const Compute<S>* grad_kl;  // [rows]: null only when absent (rows > 0 here)
  S *grad_mu, *grad_logvar, *grad_prior_mu, *grad_prior_logvar;
};

template <typename T, bool kGz, bool kGkl, bool kPrior>
VAE_INLINE void backward_math(int64_t n, T g, const T* __restrict m, const T* __restrict l,
                              const T* __restrict gz, const T* __restrict e, const T* __restrict pm,
                              const T* __restrict pl, T* __restrict gm, T* __restrict gl,
                              T* __restrict gpm, T* __restrict gpl) {
  for (int64_t i = 0; i < n; ++i) {
    T d_mu(0), d_lv(0);
    if constexpr (kGz) {
      d_mu = gz[i];
      d_lv = reparam_grad_logvar(gz[i], l[i], e[i]);
    }
    if constexpr (kGkl) {
      const KlGrad<T> k =
          kPrior ? kl_grad_general(g, m[i], l[i], pm[i], pl[i]) : kl_grad_standard(g, m[i], l[i]);
      d_mu += k.mu;
      d_lv += k.lv;
      gpm[i] = -k.mu;
      gpl[i] = k.plv;
    }
    gm[i] = d_mu;
    gl[i] = d_lv;
  }
}

template <typename S, bool kGz, bool kGkl, bool kPrior>
VAE_INLINE void backward_rows(const BackwardPointers<S>& v, int64_t b0, int64_t b1) {
  using T = Compute<S>;
  alignas(64) T m_buf[kChunk], l_buf[kChunk], e_buf[kChunk], gz_buf[kChunk];
  alignas(64) T pm_buf[kChunk], pl_buf[kChunk];
  alignas(64) T gm_buf[kChunk], gl_buf[kChunk], gpm[kChunk], gpl[kChunk];
  const bool sample = kGz && v.sampled;
  for_each_tile<T>(
      v.cols, b0, b1, sample, v.key,
      [&](int64_t b, int64_t j0, int64_t n, const T* normals) VAE_LAMBDA_INLINE {
        const T g = kGkl ? v.grad_kl[b] : T(0);
        const int64_t out = b * v.cols + j0;
        const T* m = kGkl ? stage(v.mu, b, j0, n, m_buf) : nullptr;
        const T* l = stage(v.logvar, b, j0, n, l_buf);
        const T* gz = kGz ? stage(v.grad_z, b, j0, n, gz_buf) : nullptr;
        const T* e = sample ? normals : (kGz ? stage(v.eps, b, j0, n, e_buf) : nullptr);
        const T* pm = kPrior ? stage(v.prior_mu, b, j0, n, pm_buf) : nullptr;
        const T* pl = kPrior ? stage(v.prior_logvar, b, j0, n, pl_buf) : nullptr;
        T* gm = output_chunk(v.grad_mu == nullptr ? nullptr : v.grad_mu + out, gm_buf);
        T* gl = output_chunk(v.grad_logvar + out, gl_buf);
        backward_math<T, kGz, kGkl, kPrior>(n, g, m, l, gz, e, pm, pl, gm, gl, gpm, gpl);
        if (v.grad_mu != nullptr) store(gm, n, v.grad_mu + out);
        store(gl, n, v.grad_logvar + out);
        if (v.grad_prior_mu != nullptr) {
          if (!kGkl) {
            std::fill(gpm, gpm + n, T(0));
            std::fill(gpl, gpl + n, T(0));
          }
          store(gpm, n, v.grad_prior_mu + out);
          store(gpl, n, v.grad_prior_logvar + out);
        }
      });
}

template <typename S>
VAE_INLINE void backward_rows_any(const BackwardPointers<S>& v, int64_t b0, int64_t b1) {
  const bool gz = v.has_grad_z, gkl = v.grad_kl != nullptr;
  const bool prior = v.prior_mu.data != nullptr;
  if (gz && gkl) {
    prior ? backward_rows<S, true, true, true>(v, b0, b1)
          : backward_rows<S, true, true, false>(v, b0, b1);
  } else if (gz) {
    backward_rows<S, true, false, false>(v, b0, b1);
  } else if (gkl) {
    prior ? backward_rows<S, false, true, true>(v, b0, b1)
          : backward_rows<S, false, true, false>(v, b0, b1);
  } else {
    backward_rows<S, false, false, false>(v, b0, b1);
  }
}

// The per-dtype entry points: float and bfloat16 are compiled once per ISA (the hot paths);
// half and double once.
VAE_CPU_CLONES void backward_rows_typed(const BackwardPointers<float>& v, int64_t b0, int64_t b1) {
  backward_rows_any(v, b0, b1);
}
VAE_CPU_CLONES void backward_rows_typed(const BackwardPointers<c10::BFloat16>& v, int64_t b0,
                                        int64_t b1) {
  backward_rows_any(v, b0, b1);
}
void backward_rows_typed(const BackwardPointers<c10::Half>& v, int64_t b0, int64_t b1) {
  backward_rows_any(v, b0, b1);
}
void backward_rows_typed(const BackwardPointers<double>& v, int64_t b0, int64_t b1) {
  backward_rows_any(v, b0, b1);
}

// ------------------------------------------------------------------ tensors -> pointers

// A prior's view; when only the other prior is given, this one reads as 0 from `zero`.
template <typename S>
Strided<S> prior_or_zero(const std::optional<PriorView>& p, const S* zero) {
  return p ? strided_prior<S>(*p) : Strided<S>{zero, 0, 0};
}

PhiloxKey seed_key(const at::Tensor& seed) {
  return seed.defined() ? philox_key(*seed.const_data_ptr<int64_t>()) : PhiloxKey{0, 0};
}

// Whole rows per task, at least 2k elements each: the per-row KL needs no cross-thread
// reduction and is the same for any thread count.
int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, (int64_t{1} << 11) / std::max<int64_t>(cols, 1));
}

template <typename S>
void forward_typed(const ForwardTensors& a) {
  static const S zero(0);
  ForwardPointers<S> v;
  v.cols = a.shape.cols;
  v.mu = strided_rows<S>(a.mu);
  v.logvar = strided_rows<S>(a.logvar);
  v.eps = rows_or_null<S>(a.eps);
  v.sampled = a.seed.defined();
  v.key = seed_key(a.seed);
  const bool prior = a.prior_mu.has_value() || a.prior_logvar.has_value();
  v.prior_mu = prior ? prior_or_zero<S>(a.prior_mu, &zero) : Strided<S>{nullptr, 0, 0};
  v.prior_logvar = prior ? prior_or_zero<S>(a.prior_logvar, &zero) : Strided<S>{nullptr, 0, 0};
  v.want_z = a.z.defined();
  v.want_kl = a.kl.defined();
  v.z = data_or_null<S>(a.z);
  v.kl = data_or_null<Compute<S>>(a.kl);
  at::parallel_for(0, a.shape.rows, row_grain(v.cols),
                   [&](int64_t b0, int64_t b1) { forward_rows_typed(v, b0, b1); });
}

template <typename S>
void backward_typed(const BackwardTensors& a) {
  static const S zero(0);
  BackwardPointers<S> v;
  v.cols = a.shape.cols;
  v.mu = strided_rows<S>(a.mu);
  v.logvar = strided_rows<S>(a.logvar);
  v.eps = rows_or_null<S>(a.eps);
  v.grad_z = rows_or_null<S>(a.grad_z);
  v.has_grad_z = a.grad_z.defined();
  v.sampled = a.seed.defined();
  v.key = seed_key(a.seed);
  const bool prior = a.prior_mu.has_value() || a.prior_logvar.has_value();
  v.prior_mu = prior ? prior_or_zero<S>(a.prior_mu, &zero) : Strided<S>{nullptr, 0, 0};
  v.prior_logvar = prior ? prior_or_zero<S>(a.prior_logvar, &zero) : Strided<S>{nullptr, 0, 0};
  v.grad_kl = a.grad_kl.defined() ? a.grad_kl.const_data_ptr<Compute<S>>() : nullptr;
  v.grad_mu = data_or_null<S>(a.grad_mu);
  v.grad_logvar = data_or_null<S>(a.grad_logvar);
  v.grad_prior_mu = data_or_null<S>(a.grad_prior_mu);
  v.grad_prior_logvar = data_or_null<S>(a.grad_prior_logvar);
  at::parallel_for(0, a.shape.rows, row_grain(v.cols),
                   [&](int64_t b0, int64_t b1) { backward_rows_typed(v, b0, b1); });
}

void forward_cpu(const ForwardTensors& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.mu.scalar_type(), "vae_ext_forward",
                                  [&] { forward_typed<scalar_t>(a); });
}

void backward_cpu(const BackwardTensors& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.mu.scalar_type(), "vae_ext_backward",
                                  [&] { backward_typed<scalar_t>(a); });
}

}  // namespace
}  // namespace vae_ext

TORCH_LIBRARY_IMPL(vae_ext, CPU, m) {
  vae_ext::OpFront<vae_ext::forward_cpu, vae_ext::backward_cpu>::register_kernels(m);
}
