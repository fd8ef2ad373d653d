// Device code of the CUDA kernels and the host-side plan of a launch (which path, which
// tiling, the kernel parameters); kernels_cuda.cu launches them and registers the ops.
// Everything here is plain C++ apart from the CUDA qualifiers and intrinsics, so the file
// also compiles for the host against an emulation of those: tests/cuda_emulation/ runs it
// on CPU threads and compares it with the CPU kernels.
//
// Work layout. Row b of the [rows, cols] view is cut into groups of G consecutive elements
// whose flat index b * cols + j starts at a multiple of 4, so one Philox block (four
// normals) serves four elements. The vector path (cols % G == 0, every operand 16-byte
// aligned with a row stride that keeps it so) moves a group with 16-byte loads and stores;
// the scalar path takes groups of 4 aligned to the flat index, which may start before
// column 0 or end past the last column when cols % 4 != 0 (those lanes are masked).
//
// A team of `team` threads (a power of two, up to a block) owns a row; a block holds
// kBlock / team teams, so short rows pack several to a block and long rows take a block,
// or `splits` blocks (gridDim.y) when there are too few rows to fill the GPU. The per-row
// KL is summed per thread in a fixed order, then across the team by warp shuffles and a
// fixed-order pass over the block's warp sums; split rows write one partial per block and
// a second kernel adds them in order. No atomics: the KL is bit-reproducible.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>

#include "../op_front.h"
#include "../philox.h"
#include "../vae_math.h"

namespace vae_ext {
namespace cuda_kernels {

constexpr int kBlock = 256;  // threads per block
constexpr int kWarp = 32;
constexpr int kGroupsPerThread = 4;  // groups a thread should get before teams grow
constexpr int kScalarGroup = 4;      // elements per group on the scalar path

// Elements per group on the vector path: at least one 16-byte word and one Philox block.
template <typename S>
constexpr int vector_group() {
  return 16 / sizeof(S) > 4 ? static_cast<int>(16 / sizeof(S)) : 4;
}

// Resident blocks per SM the register budget must allow (__launch_bounds__): 3 keeps
// 768 threads per SM in flight; the float64 math needs the registers of 2.
template <typename S>
constexpr int min_blocks() {
  return sizeof(S) == 8 ? 2 : 3;
}

struct Tiling {
  int64_t rows, cols;
  int64_t row_tiles;  // ceil(rows / (kBlock / team))
  int team;           // threads per row: a power of two in [1, kBlock]
  int splits;         // blocks per row; > 1 only when team == kBlock
};

template <typename S>
struct ForwardParams {
  using T = at::opmath_type<S>;
  Strided<S> mu, logvar, eps, prior_mu, prior_logvar;  // eps / prior data null when absent
  const int64_t* seed;                                 // on the device; null unless z is sampled
  bool has_prior;
  S* z;   // contiguous [rows, cols], null when not wanted
  T* kl;  // [rows, splits] (per-row KL when splits == 1), null when not wanted
};

template <typename S>
struct BackwardParams {
  using T = at::opmath_type<S>;
  Strided<S> grad_z, mu, logvar, eps, prior_mu, prior_logvar;  // grad_z / eps / priors nullable
  const T* grad_kl;     // [rows], null when the KL has no gradient
  const int64_t* seed;  // on the device; null unless grad_z is given and eps sampled
  bool has_prior;
  S* grad_mu;  // all contiguous [rows, cols]; grad_mu and the prior grads nullable
  S* grad_logvar;
  S* grad_prior_mu;
  S* grad_prior_logvar;
};

// ------------------------------------------------------------------------- group access

// Loads the G values of the group starting at column j0 of row b, in the storage type (half
// types stay packed until used). Lanes outside [0, cols), and every lane of a null operand,
// read as 0; col_stride 0 broadcasts one value.
template <typename S, int G, bool kVec>
__device__ __forceinline__ void load_group(const Strided<S>& t, int64_t b, int64_t j0, int64_t cols,
                                           S (&out)[G]) {
  if (t.data == nullptr) {
#pragma unroll
    for (int e = 0; e < G; ++e) out[e] = S(0);
    return;
  }
  const S* row = t.data + b * t.row_stride;
  if constexpr (kVec) {
    if (t.col_stride == 1) {
      constexpr int kWords = G * sizeof(S) / 16;
      uint4 raw[kWords];
#pragma unroll
      for (int w = 0; w < kWords; ++w) raw[w] = reinterpret_cast<const uint4*>(row + j0)[w];
      memcpy(out, raw, sizeof raw);
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < G; ++e) {
    const int64_t j = j0 + e;
    const bool inside = kVec || (j >= 0 && j < cols);
    out[e] = inside ? row[j * t.col_stride] : S(0);
  }
}

// Stores a group into row b of a contiguous [rows, cols] tensor.
template <typename S, int G, bool kVec>
__device__ __forceinline__ void store_group(S* data, int64_t b, int64_t j0, int64_t cols,
                                            const S (&in)[G]) {
  S* row = data + b * cols;
  if constexpr (kVec) {
    constexpr int kWords = G * sizeof(S) / 16;
    uint4 raw[kWords];
    memcpy(raw, in, sizeof raw);
#pragma unroll
    for (int w = 0; w < kWords; ++w) reinterpret_cast<uint4*>(row + j0)[w] = raw[w];
  } else {
#pragma unroll
    for (int e = 0; e < G; ++e) {
      const int64_t j = j0 + e;
      if (j >= 0 && j < cols) row[j] = in[e];
    }
  }
}

// epsilon of lanes 4q .. 4q + 3 of a group whose first flat index is `first` (a multiple of
// 4): Philox block first / 4 + q when sampled, else the given values.
template <typename S, int G, typename T>
__device__ __forceinline__ void eps_quad(bool sampled, PhiloxKey key, int64_t first, int q,
                                         const S (&given)[G], T (&out)[4]) {
  if (sampled) {
    const Float4 n = normal_block(key, (static_cast<uint64_t>(first) >> 2) + q);
    out[0] = static_cast<T>(n.n0);
    out[1] = static_cast<T>(n.n1);
    out[2] = static_cast<T>(n.n2);
    out[3] = static_cast<T>(n.n3);
  } else {
#pragma unroll
    for (int r = 0; r < 4; ++r) out[r] = static_cast<T>(given[4 * q + r]);
  }
}

template <int G, bool kVec>
__device__ __forceinline__ bool lane_inside(int64_t j0, int e, int64_t cols) {
  return kVec || (j0 + e >= 0 && j0 + e < cols);
}

// ------------------------------------------------------------------------- team mapping

// First column of row b's group 0 (<= 0: the scalar path aligns groups to the flat index).
template <bool kVec>
__device__ __forceinline__ int64_t group_origin(int64_t b, int64_t cols) {
  return kVec ? 0 : -((b * cols) & 3);
}

template <int G>
__device__ __forceinline__ int64_t group_count(int64_t origin, int64_t cols) {
  return (cols - origin + G - 1) / G;
}

// Sum of v over the team of this thread; every thread of the block must call it. The
// result is the same in every thread of the team and does not depend on timing.
template <typename T>
__device__ __forceinline__ T team_sum(T v, int team, T* warp_sums) {
  const int width = team < kWarp ? team : kWarp;
  for (int offset = width / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  if (team <= kWarp) return v;
  const int warp = threadIdx.x / kWarp;
  __syncthreads();  // the previous tile's readers are done with warp_sums
  if (threadIdx.x % kWarp == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps_per_team = team / kWarp;
  const int first = warp / warps_per_team * warps_per_team;
  T total = warp_sums[first];
  for (int w = 1; w < warps_per_team; ++w) total += warp_sums[first + w];
  return total;
}

// ------------------------------------------------------------------------- forward

// Writes z for one group and returns the group's KL sum (0 when the KL is not wanted).
template <typename S, int G, bool kVec>
__device__ __forceinline__ at::opmath_type<S> forward_group(const ForwardParams<S>& p,
                                                            PhiloxKey key, int64_t b, int64_t j0,
                                                            int64_t cols) {
  using T = at::opmath_type<S>;
  S mu[G], lv[G];
  load_group<S, G, kVec>(p.mu, b, j0, cols, mu);
  load_group<S, G, kVec>(p.logvar, b, j0, cols, lv);
  if (p.z != nullptr) {
    S eps[G], z[G];
    load_group<S, G, kVec>(p.eps, b, j0, cols, eps);
#pragma unroll
    for (int q = 0; q < G / 4; ++q) {
      T e4[4];
      eps_quad(p.seed != nullptr, key, b * cols + j0, q, eps, e4);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int e = 4 * q + r;
        z[e] = static_cast<S>(reparam(static_cast<T>(mu[e]), static_cast<T>(lv[e]), e4[r]));
      }
    }
    store_group<S, G, kVec>(p.z, b, j0, cols, z);
  }
  T sum(0);
  if (p.kl == nullptr) return sum;
  if (p.has_prior) {
    S pmu[G], plv[G];
    load_group<S, G, kVec>(p.prior_mu, b, j0, cols, pmu);
    load_group<S, G, kVec>(p.prior_logvar, b, j0, cols, plv);
#pragma unroll
    for (int e = 0; e < G; ++e) {
      if (lane_inside<G, kVec>(j0, e, cols)) {
        sum += kl_general<T>(static_cast<T>(mu[e]), static_cast<T>(lv[e]), static_cast<T>(pmu[e]),
                             static_cast<T>(plv[e]));
      }
    }
  } else {
#pragma unroll
    for (int e = 0; e < G; ++e) {
      if (lane_inside<G, kVec>(j0, e, cols)) {
        sum += kl_standard<T>(static_cast<T>(mu[e]), static_cast<T>(lv[e]));
      }
    }
  }
  return sum;
}

template <typename S, int G, bool kVec>
__global__ void __launch_bounds__(kBlock, min_blocks<S>())
    forward_kernel(const ForwardParams<S> p, const Tiling t) {
  using T = at::opmath_type<S>;
  __shared__ T warp_sums[kBlock / kWarp];
  const int rank = threadIdx.x & (t.team - 1);
  const int rows_per_block = kBlock / t.team;
  const int64_t team_row = threadIdx.x / t.team;
  const int64_t first_group = static_cast<int64_t>(blockIdx.y) * t.team + rank;
  const int64_t group_stride = static_cast<int64_t>(t.team) * t.splits;
  const PhiloxKey key = p.seed != nullptr ? philox_key(*p.seed) : PhiloxKey{0u, 0u};
  for (int64_t tile = blockIdx.x; tile < t.row_tiles; tile += gridDim.x) {
    const int64_t b = tile * rows_per_block + team_row;
    T acc(0);
    if (b < t.rows) {
      const int64_t origin = group_origin<kVec>(b, t.cols);
      const int64_t count = group_count<G>(origin, t.cols);
      for (int64_t k = first_group; k < count; k += group_stride) {
        acc += forward_group<S, G, kVec>(p, key, b, origin + k * G, t.cols);
      }
    }
    if (p.kl != nullptr) {
      acc = team_sum(acc, t.team, warp_sums);
      if (rank == 0 && b < t.rows) p.kl[b * t.splits + blockIdx.y] = acc;
    }
  }
}

// kl[b] = sum of the row's partials, in split order.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    sum_partials_kernel(const T* partials, int splits, int64_t rows, T* kl) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < rows;
       b += stride) {
    T total = partials[b * splits];
    for (int s = 1; s < splits; ++s) total += partials[b * splits + s];
    kl[b] = total;
  }
}

// ------------------------------------------------------------------------- backward

template <typename S, int G, bool kVec>
__device__ __forceinline__ void backward_group(const BackwardParams<S>& p, PhiloxKey key,
                                               at::opmath_type<S> g_kl, int64_t b, int64_t j0,
                                               int64_t cols) {
  using T = at::opmath_type<S>;
  const bool has_gz = p.grad_z.data != nullptr, has_gkl = p.grad_kl != nullptr;
  S lv[G], g_z[G], eps[G], mu[G], pmu[G], plv[G];
  load_group<S, G, kVec>(p.logvar, b, j0, cols, lv);
  load_group<S, G, kVec>(p.grad_z, b, j0, cols, g_z);
  load_group<S, G, kVec>(p.eps, b, j0, cols, eps);
  load_group<S, G, kVec>(p.mu, b, j0, cols, mu);
  load_group<S, G, kVec>(p.prior_mu, b, j0, cols, pmu);
  load_group<S, G, kVec>(p.prior_logvar, b, j0, cols, plv);
  S d_mu[G], d_lv[G], d_pmu[G], d_plv[G];
#pragma unroll
  for (int q = 0; q < G / 4; ++q) {
    T e4[4];
    if (has_gz) eps_quad(p.seed != nullptr, key, b * cols + j0, q, eps, e4);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int e = 4 * q + r;
      const T l = static_cast<T>(lv[e]);
      T g_mu(0), g_lv(0), g_pmu(0), g_plv(0);
      if (has_gz) {
        g_mu = static_cast<T>(g_z[e]);
        g_lv = reparam_grad_logvar(g_mu, l, e4[r]);
      }
      if (has_gkl) {
        const T m = static_cast<T>(mu[e]);
        const KlGrad<T> k = p.has_prior ? kl_grad_general<T>(g_kl, m, l, static_cast<T>(pmu[e]),
                                                             static_cast<T>(plv[e]))
                                        : kl_grad_standard<T>(g_kl, m, l);
        g_mu += k.mu;
        g_lv += k.lv;
        g_pmu = -k.mu;
        g_plv = k.plv;
      }
      d_mu[e] = static_cast<S>(g_mu);
      d_lv[e] = static_cast<S>(g_lv);
      d_pmu[e] = static_cast<S>(g_pmu);
      d_plv[e] = static_cast<S>(g_plv);
    }
  }
  if (p.grad_mu != nullptr) store_group<S, G, kVec>(p.grad_mu, b, j0, cols, d_mu);
  store_group<S, G, kVec>(p.grad_logvar, b, j0, cols, d_lv);
  if (p.grad_prior_mu != nullptr) {
    store_group<S, G, kVec>(p.grad_prior_mu, b, j0, cols, d_pmu);
    store_group<S, G, kVec>(p.grad_prior_logvar, b, j0, cols, d_plv);
  }
}

template <typename S, int G, bool kVec>
__global__ void __launch_bounds__(kBlock, min_blocks<S>())
    backward_kernel(const BackwardParams<S> p, const Tiling t) {
  using T = at::opmath_type<S>;
  const int rank = threadIdx.x & (t.team - 1);
  const int rows_per_block = kBlock / t.team;
  const int64_t team_row = threadIdx.x / t.team;
  const int64_t first_group = static_cast<int64_t>(blockIdx.y) * t.team + rank;
  const int64_t group_stride = static_cast<int64_t>(t.team) * t.splits;
  const PhiloxKey key = p.seed != nullptr ? philox_key(*p.seed) : PhiloxKey{0u, 0u};
  for (int64_t tile = blockIdx.x; tile < t.row_tiles; tile += gridDim.x) {
    const int64_t b = tile * rows_per_block + team_row;
    if (b >= t.rows) continue;
    const T g_kl = p.grad_kl != nullptr ? p.grad_kl[b] : T(0);
    const int64_t origin = group_origin<kVec>(b, t.cols);
    const int64_t count = group_count<G>(origin, t.cols);
    for (int64_t k = first_group; k < count; k += group_stride) {
      backward_group<S, G, kVec>(p, key, g_kl, b, origin + k * G, t.cols);
    }
  }
}

// ------------------------------------------------------------------------- launch plan

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks that keep every SM busy for about two waves of resident blocks.
inline int64_t target_blocks(int multiprocessors) {
  return int64_t{multiprocessors} * (2048 / kBlock) * 2;
}

inline Tiling make_tiling(int64_t rows, int64_t cols, int group, int multiprocessors) {
  // Upper bound of the groups of a row (the scalar path's first and last may be partial).
  const int64_t groups = ceil_div(cols, group) + 1;
  int team = 1;
  while (team < kBlock && int64_t{team} * kGroupsPerThread < groups) team *= 2;
  Tiling t{rows, cols, ceil_div(rows, kBlock / team), team, 1};
  const int64_t target = target_blocks(multiprocessors);
  if (team == kBlock && rows < target) {
    const int64_t wanted = std::min(ceil_div(groups, kBlock), ceil_div(target, rows));
    t.splits = static_cast<int>(std::clamp<int64_t>(wanted, 1, 65535));
  }
  return t;
}

// gridDim.x: the row tiles, capped (the kernels loop over the rest).
inline int64_t grid_x(const Tiling& t, int multiprocessors) {
  return std::min(t.row_tiles, int64_t{multiprocessors} * (2048 / kBlock) * 8);
}

inline int64_t sum_partials_blocks(int64_t rows, int multiprocessors) {
  return std::min(ceil_div(rows, kBlock), target_blocks(multiprocessors));
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The operand allows 16-byte accesses to every group of G elements of every row.
template <typename S>
bool vectorizable(const Strided<S>& t, int group) {
  return t.data == nullptr || t.col_stride == 0 || (aligned16(t.data) && t.row_stride % group == 0);
}

template <typename S>
bool vectorizable_output(const S* data) {
  return data == nullptr || aligned16(data);
}

template <typename S>
Strided<S> operand(const at::Tensor& t) {
  return t.defined() ? strided_rows<S>(t) : Strided<S>{nullptr, 0, 1};
}

template <typename S>
Strided<S> prior_operand(const std::optional<PriorView>& p) {
  return p.has_value() ? strided_prior<S>(*p) : Strided<S>{nullptr, 0, 0};
}

template <typename S>
S* output(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<S>() : nullptr;
}

template <typename S>
struct ForwardPlan {
  ForwardParams<S> params;
  Tiling tiling;
  bool vec;             // launch the vector-path kernel
  at::Tensor partials;  // [rows, splits] KL partials when a row spans several blocks
};

template <typename S>
struct BackwardPlan {
  BackwardParams<S> params;
  Tiling tiling;
  bool vec;
};

template <typename S>
ForwardPlan<S> plan_forward(const ForwardArgs& a, int multiprocessors) {
  using T = at::opmath_type<S>;
  constexpr int kVecGroup = vector_group<S>();
  ForwardPlan<S> plan;
  ForwardParams<S>& p = plan.params;
  p = {operand<S>(a.mu),
       operand<S>(a.logvar),
       operand<S>(a.eps),
       prior_operand<S>(a.prior_mu),
       prior_operand<S>(a.prior_logvar),
       a.z.defined() && a.seed.defined() ? a.seed.const_data_ptr<int64_t>() : nullptr,
       a.prior_mu.has_value() || a.prior_logvar.has_value(),
       output<S>(a.z),
       output<T>(a.kl)};
  const int64_t rows = a.shape.rows, cols = a.shape.cols;
  plan.vec = cols % kVecGroup == 0 && vectorizable(p.mu, kVecGroup) &&
             vectorizable(p.logvar, kVecGroup) && vectorizable(p.eps, kVecGroup) &&
             vectorizable(p.prior_mu, kVecGroup) && vectorizable(p.prior_logvar, kVecGroup) &&
             vectorizable_output(p.z);
  plan.tiling = make_tiling(rows, cols, plan.vec ? kVecGroup : kScalarGroup, multiprocessors);
  if (p.kl != nullptr && plan.tiling.splits > 1) {
    const at::Tensor partials = at::empty({rows, plan.tiling.splits}, a.kl.options());
    p.kl = partials.mutable_data_ptr<T>();
    plan.partials = partials;
  }
  return plan;
}

template <typename S>
BackwardPlan<S> plan_backward(const BackwardArgs& a, int multiprocessors) {
  using T = at::opmath_type<S>;
  constexpr int kVecGroup = vector_group<S>();
  // Operands a term does not need stay null, so the kernel does not read them.
  const bool has_gz = a.grad_z.defined(), has_gkl = a.grad_kl.defined();
  const Strided<S> none{nullptr, 0, 1};
  BackwardPlan<S> plan;
  BackwardParams<S>& p = plan.params;
  p = {operand<S>(a.grad_z),
       has_gkl ? operand<S>(a.mu) : none,
       operand<S>(a.logvar),
       has_gz ? operand<S>(a.eps) : none,
       has_gkl ? prior_operand<S>(a.prior_mu) : none,
       has_gkl ? prior_operand<S>(a.prior_logvar) : none,
       has_gkl ? a.grad_kl.const_data_ptr<T>() : nullptr,
       has_gz && !a.eps.defined() ? a.seed.const_data_ptr<int64_t>() : nullptr,
       a.prior_mu.has_value() || a.prior_logvar.has_value(),
       output<S>(a.grad_mu),
       output<S>(a.grad_logvar),
       output<S>(a.grad_prior_mu),
       output<S>(a.grad_prior_logvar)};
  const int64_t cols = a.shape.cols;
  plan.vec = cols % kVecGroup == 0 && vectorizable(p.grad_z, kVecGroup) &&
             vectorizable(p.mu, kVecGroup) && vectorizable(p.logvar, kVecGroup) &&
             vectorizable(p.eps, kVecGroup) && vectorizable(p.prior_mu, kVecGroup) &&
             vectorizable(p.prior_logvar, kVecGroup) && vectorizable_output(p.grad_mu) &&
             vectorizable_output(p.grad_logvar) && vectorizable_output(p.grad_prior_mu) &&
             vectorizable_output(p.grad_prior_logvar);
  plan.tiling =
      make_tiling(a.shape.rows, cols, plan.vec ? kVecGroup : kScalarGroup, multiprocessors);
  return plan;
}

// ------------------------------------------------------------------------- launches

// The kernel launches of one call, in order. launch(kernel, grid, block, args...) runs
// kernel<<<grid, block>>>(args...): on the current stream in kernels_cuda.cu, on emulated
// threads in the CPU emulation (tests/cuda_emulation/), which so runs exactly these plans.
template <typename S, typename Launch>
void run_forward(const ForwardArgs& a, int multiprocessors, Launch&& launch) {
  using T = at::opmath_type<S>;
  constexpr int kVecGroup = vector_group<S>();
  if (a.shape.rows == 0) return;
  if (a.shape.cols == 0) {
    if (a.kl.defined()) a.kl.zero_();
    return;
  }
  const ForwardPlan<S> plan = plan_forward<S>(a, multiprocessors);
  const dim3 grid(static_cast<unsigned>(grid_x(plan.tiling, multiprocessors)),
                  static_cast<unsigned>(plan.tiling.splits));
  if (plan.vec) {
    launch(forward_kernel<S, kVecGroup, true>, grid, dim3(kBlock), plan.params, plan.tiling);
  } else {
    launch(forward_kernel<S, kScalarGroup, false>, grid, dim3(kBlock), plan.params, plan.tiling);
  }
  if (plan.partials.defined()) {
    const int64_t rows = a.shape.rows;
    launch(sum_partials_kernel<T>,
           dim3(static_cast<unsigned>(sum_partials_blocks(rows, multiprocessors))), dim3(kBlock),
           static_cast<const T*>(plan.params.kl), plan.tiling.splits, rows,
           a.kl.mutable_data_ptr<T>());
  }
}

template <typename S, typename Launch>
void run_backward(const BackwardArgs& a, int multiprocessors, Launch&& launch) {
  constexpr int kVecGroup = vector_group<S>();
  if (a.shape.rows == 0 || a.shape.cols == 0) return;
  const BackwardPlan<S> plan = plan_backward<S>(a, multiprocessors);
  const dim3 grid(static_cast<unsigned>(grid_x(plan.tiling, multiprocessors)),
                  static_cast<unsigned>(plan.tiling.splits));
  if (plan.vec) {
    launch(backward_kernel<S, kVecGroup, true>, grid, dim3(kBlock), plan.params, plan.tiling);
  } else {
    launch(backward_kernel<S, kScalarGroup, false>, grid, dim3(kBlock), plan.params, plan.tiling);
  }
}

}  // namespace cuda_kernels
}  // namespace vae_ext
