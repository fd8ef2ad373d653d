// Device code of the CUDA kernels and the host-side plan of a launch (which path, which
// tiling, the kernel parameters); kernels_cuda.cu launches them and registers the ops.
// Everything here is plain C++ apart from the CUDA qualifiers and intrinsics, so the file
// also compiles for the host against an emulation of those: tests/cuda_emulation/ runs it
// on CPU threads and compares it with the CPU kernels.
//
// Work layout. Row b of the [rows, cols] view is cut into groups of G consecutive elements.
// The vector path (cols % G == 0, every operand 16-byte aligned with a row stride that keeps
// it so) moves a group with 16-byte loads and stores; the scalar path takes groups of 4.
// Groups start at a column that is a multiple of G, except where the scalar path samples z
// or rebuilds it in backward with cols % 4 != 0: there groups are aligned to the flat index
// b * cols + j, so that one Philox block (four normals) serves four elements, and may start
// before column 0 or end past the last column (those lanes are masked).
//
// A team of `team` threads (a power of two, up to a block) owns a row; a block holds
// kBlock / team teams, so short rows pack several to a block and long rows take a block,
// or `splits` blocks (gridDim.y; blocks loop past its limit) when there are too few rows to
// fill the GPU or a row is longer than a split may be. Split y of a row takes a contiguous
// run of team * iterations groups, `iterations` a power of two.
//
// The per-row KL is added up in the order of csrc/row_sum.h, whatever the plan: in each
// team-wide step the team's terms (a whole number of leaves, or a row shorter than a leaf)
// are reduced by warp shuffles in exactly that tree (team_step_sum), the steps of a split
// are combined by PairwiseSum, and split rows write one partial per split that a second
// kernel combines the same way. So the KL does not depend on the SM count, the team size,
// the path or the outputs requested, and equals the CPU kernels' and the reference's.
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
#include "../row_sum.h"
#include "../vae_math.h"

namespace vae_ext {
namespace cuda_kernels {

constexpr int kBlock = 256;  // threads per block
constexpr int kWarp = 32;
constexpr int kGroupsPerThread = 4;  // groups a thread should get before teams grow
constexpr int kScalarGroup = 4;      // elements per group on the scalar path
// Depth of the PairwiseSum over a split's team-wide steps: up to 2^24 - 1 steps (2^34
// elements and more). Indexed at run time, it lives in local memory, used by one thread.
constexpr int kStepDepth = 24;

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
  int64_t row_tiles;   // ceil(rows / (kBlock / team))
  int team;            // threads per row: a power of two in [1, kBlock]
  int64_t splits;      // runs of `iterations` steps per row; > 1 only when team == kBlock
  int64_t iterations;  // team-wide steps per split: a power of two
};

// A forward pass as the kernel sees it: typed pointers and strides of ForwardTensors
// (op_args.h), passed by value at launch.
template <typename S>
struct ForwardPointers {
  using T = at::opmath_type<S>;
  Strided<S> mu, logvar, eps, prior_mu, prior_logvar;  // eps / prior data null when absent
  const int64_t* seed;                                 // on the device; null unless z is sampled
  bool has_prior;
  S* z;   // contiguous [rows, cols], null when not wanted
  T* kl;  // [rows, splits] (per-row KL when splits == 1), null when not wanted
};

// The same for a backward pass.
template <typename S>
struct BackwardPointers {
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

// First column of row b's group 0 for a flat-aligned loop (<= 0 on the scalar path).
template <bool kVec>
__device__ __forceinline__ int64_t group_origin(int64_t b, int64_t cols) {
  return kVec ? 0 : -((b * cols) & 3);
}

template <int G>
__device__ __forceinline__ int64_t group_count(int64_t origin, int64_t cols) {
  return (cols - origin + G - 1) / G;
}

__device__ __forceinline__ int64_t min_of(int64_t a, int64_t b) { return a < b ? a : b; }

// The KL sum of one team-wide step in the order of csrc/row_sum.h. Thread `rank` of the team
// holds the terms of columns [rank * G, rank * G + G) of the step (0 for missing ones); the
// step is a whole number of leaves, or, for a team narrower than a leaf, the whole row. Every
// thread of the block must call it; every thread of the team gets the sum. A shuffle partner
// outside the team (offset >= team) would hold pad terms only, so those levels are skipped.
template <typename T, int G>
__device__ __forceinline__ T team_step_sum(T (&v)[G], int team, T* warp_sums) {
  constexpr int kRowThreads = kSumLanes / G;  // threads holding one row of a leaf
  constexpr int kLeafThreads = kSumLeaf / G;  // threads holding one leaf
  static_assert(kSumLanes % G == 0 && kLeafThreads <= kWarp, "a leaf within a warp");
  // 1. The leaf's rows, lane by lane: a pairwise tree over the threads kRowThreads apart.
#pragma unroll
  for (int offset = kRowThreads; offset < kLeafThreads; offset *= 2) {
    if (offset < team) {
#pragma unroll
      for (int e = 0; e < G; ++e) v[e] += __shfl_xor_sync(0xffffffffu, v[e], offset);
    }
  }
  // 2. The 16 lane sums: pairwise within the thread, then across the row's threads.
#pragma unroll
  for (int width = G / 2; width >= 1; width /= 2) {
#pragma unroll
    for (int e = 0; e < width; ++e) v[e] = v[2 * e] + v[2 * e + 1];
  }
  T sum = v[0];
#pragma unroll
  for (int offset = 1; offset < kRowThreads; offset *= 2) {
    if (offset < team) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  }
  // 3. The leaves of the warp, then the warps of the team: pairwise trees.
#pragma unroll
  for (int offset = kLeafThreads; offset < kWarp; offset *= 2) {
    if (offset < team) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  }
  if (team <= kWarp) return sum;
  const int warp = threadIdx.x / kWarp;
  __syncthreads();  // the previous step's readers are done with warp_sums
  if (threadIdx.x % kWarp == 0) warp_sums[warp] = sum;
  __syncthreads();
  const int warps = team / kWarp;
  const int first = warp / warps * warps;
  T level[kBlock / kWarp];
#pragma unroll
  for (int w = 0; w < kBlock / kWarp; ++w) level[w] = w < warps ? warp_sums[first + w] : T(0);
#pragma unroll
  for (int width = kBlock / kWarp / 2; width >= 1; width /= 2) {
#pragma unroll
    for (int w = 0; w < width; ++w) level[w] = level[2 * w] + level[2 * w + 1];
  }
  return level[0];
}

// The prologue of forward_kernel and backward_kernel: this thread's place in the tiling.
struct TeamSlot {
  int rank;            // within the team that owns a row
  int rows_per_block;  // teams per block
  int64_t team_row;    // the team's row within a row tile
  int64_t span;        // groups per split of a row
  __device__ __forceinline__ int64_t row(int64_t tile) const {
    return tile * rows_per_block + team_row;
  }
};

__device__ __forceinline__ TeamSlot team_slot(const Tiling& t) {
  return {static_cast<int>(threadIdx.x & (t.team - 1)), kBlock / t.team,
          static_cast<int64_t>(threadIdx.x / t.team), t.team * t.iterations};
}

// The Philox key of a sampled eps (seed on the device), or an unused one.
__device__ __forceinline__ PhiloxKey seed_key(const int64_t* seed) {
  return seed != nullptr ? philox_key(*seed) : PhiloxKey{0u, 0u};
}

// ------------------------------------------------------------------------- forward

// One group of row b starting at column j0: writes z when `z`, and the group's KL terms into
// `terms` when kKl (0 for lanes outside the row).
template <typename S, int G, bool kVec, bool kKl>
__device__ __forceinline__ void forward_group(const ForwardPointers<S>& p, PhiloxKey key, int64_t b,
                                              int64_t j0, int64_t cols, bool z_wanted,
                                              at::opmath_type<S> (&terms)[G]) {
  using T = at::opmath_type<S>;
  S mu[G], lv[G];
  load_group<S, G, kVec>(p.mu, b, j0, cols, mu);
  load_group<S, G, kVec>(p.logvar, b, j0, cols, lv);
  if (z_wanted) {
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
  if constexpr (kKl) {
    if (p.has_prior) {
      S pmu[G], plv[G];
      load_group<S, G, kVec>(p.prior_mu, b, j0, cols, pmu);
      load_group<S, G, kVec>(p.prior_logvar, b, j0, cols, plv);
#pragma unroll
      for (int e = 0; e < G; ++e) {
        terms[e] = lane_inside<G, kVec>(j0, e, cols)
                       ? kl_general<T>(static_cast<T>(mu[e]), static_cast<T>(lv[e]),
                                       static_cast<T>(pmu[e]), static_cast<T>(plv[e]))
                       : T(0);
      }
    } else {
#pragma unroll
      for (int e = 0; e < G; ++e) {
        terms[e] = lane_inside<G, kVec>(j0, e, cols)
                       ? kl_standard<T>(static_cast<T>(mu[e]), static_cast<T>(lv[e]))
                       : T(0);
      }
    }
  }
}

// Groups [first, first + span) of the split this block works on; the KL loop's bounds are the
// same for every thread of the block (team_step_sum synchronizes).
template <typename S, int G, bool kVec>
__global__ void __launch_bounds__(kBlock, min_blocks<S>())
    forward_kernel(const ForwardPointers<S> p, const Tiling t) {
  using T = at::opmath_type<S>;
  __shared__ T warp_sums[kBlock / kWarp];
  const TeamSlot slot = team_slot(t);
  const int rank = slot.rank;
  const int64_t span = slot.span;
  const PhiloxKey key = seed_key(p.seed);
  const bool want_z = p.z != nullptr, want_kl = p.kl != nullptr;
  // z and the KL terms from one pass when the groups of both are column-aligned; else
  // (scalar path, cols % 4 != 0, both wanted) z first from flat-aligned groups.
  const bool fused = kVec || (t.cols & 3) == 0;
  T unused[G];
  for (int64_t split = blockIdx.y; split < t.splits; split += gridDim.y) {
    const int64_t first = split * span;  // groups [first, first + span) of the row
    for (int64_t tile = blockIdx.x; tile < t.row_tiles; tile += gridDim.x) {
      const int64_t b = slot.row(tile);
      const bool live = b < t.rows;
      if (want_z && !(want_kl && fused) && live) {
        const int64_t origin = group_origin<kVec>(b, t.cols);
        const int64_t end = min_of(group_count<G>(origin, t.cols), first + span);
        for (int64_t k = first + rank; k < end; k += t.team) {
          forward_group<S, G, kVec, false>(p, key, b, origin + k * G, t.cols, true, unused);
        }
      }
      if (!want_kl) continue;
      // The same bounds for every thread of the block: team_step_sum synchronizes.
      const int64_t end = min_of(group_count<G>(0, t.cols), first + span);
      PairwiseSum<T, kStepDepth> sum;  // rank 0's
      for (int64_t step = first; step < end; step += t.team) {
        T terms[G];
        const int64_t k = step + rank;
        if (live && k < end) {
          forward_group<S, G, kVec, true>(p, key, b, k * G, t.cols, want_z && fused, terms);
        } else {
#pragma unroll
          for (int e = 0; e < G; ++e) terms[e] = T(0);
        }
        const T step_sum = team_step_sum<T, G>(terms, t.team, warp_sums);
        if (rank == 0) sum.push(step_sum);
      }
      if (rank == 0 && live) p.kl[b * t.splits + split] = sum.total();
    }
  }
}

// kl[b] = the row's split partials (aligned subtrees of the same size) combined by the
// pairwise tree of csrc/row_sum.h: a warp per row, each lane adding an aligned run of them in
// place level by level, then the warp adding the 32 runs by shuffles.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    sum_partials_kernel(T* partials, int64_t splits, int64_t rows, T* kl) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kBlock / kWarp);
  int64_t run = 1;
  while (run * kWarp < splits) run *= 2;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * (kBlock / kWarp) + threadIdx.x / kWarp;
       b < rows; b += warps) {
    T* p = partials + b * splits;
    const int64_t lo = lane * run, hi = min_of(lo + run, splits);
    for (int64_t width = 1; width < run; width *= 2) {
      for (int64_t s = lo; s + width < hi; s += 2 * width) p[s] = p[s] + p[s + width];
    }
    T sum = lo < splits ? p[lo] : T(0);
    for (int offset = 1; offset < kWarp; offset *= 2) {
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    }
    if (lane == 0) kl[b] = sum;
  }
}

// ------------------------------------------------------------------------- backward

template <typename S, int G, bool kVec>
__device__ __forceinline__ void backward_group(const BackwardPointers<S>& p, PhiloxKey key,
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
    backward_kernel(const BackwardPointers<S> p, const Tiling t) {
  using T = at::opmath_type<S>;
  const TeamSlot slot = team_slot(t);
  const int rank = slot.rank;
  const int64_t span = slot.span;
  const PhiloxKey key = seed_key(p.seed);
  for (int64_t split = blockIdx.y; split < t.splits; split += gridDim.y) {
    const int64_t first = split * span;
    for (int64_t tile = blockIdx.x; tile < t.row_tiles; tile += gridDim.x) {
      const int64_t b = slot.row(tile);
      if (b >= t.rows) continue;
      const T g_kl = p.grad_kl != nullptr ? p.grad_kl[b] : T(0);
      const int64_t origin = group_origin<kVec>(b, t.cols);
      const int64_t end = min_of(group_count<G>(origin, t.cols), first + span);
      for (int64_t k = first + rank; k < end; k += t.team) {
        backward_group<S, G, kVec>(p, key, g_kl, b, origin + k * G, t.cols);
      }
    }
  }
}

// ------------------------------------------------------------------------- launch plan

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks that keep every SM busy for about two waves of resident blocks.
inline int64_t target_blocks(int multiprocessors) {
  return int64_t{multiprocessors} * (2048 / kBlock) * 2;
}

// Groups of the longest row: column-aligned groups of `group`, or on the scalar path
// (vec false) with cols % 4 != 0 groups of 4 aligned to the flat index, which may start up
// to 3 columns before column 0.
inline int64_t row_groups(int64_t cols, int group, bool vec) {
  return ceil_div(cols + (!vec && cols % 4 != 0 ? 3 : 0), group);
}

inline Tiling make_tiling(int64_t rows, int64_t cols, int group, bool vec, int multiprocessors) {
  const int64_t groups = row_groups(cols, group, vec);
  // Enough threads for kGroupsPerThread groups each, and a whole leaf of the KL sum (or the
  // whole row) per team-wide step (team_step_sum).
  const int64_t leaf_groups = kSumLeaf / group;
  int team = 1;
  while (team < kBlock &&
         (int64_t{team} * kGroupsPerThread < groups || (team < groups && team < leaf_groups))) {
    team *= 2;
  }
  const int64_t steps = ceil_div(groups, team);
  int64_t wanted = 1;  // splits that would fill the GPU
  const int64_t target = target_blocks(multiprocessors);
  if (team == kBlock && rows < target) wanted = std::min(steps, ceil_div(target, rows));
  // Each split a power-of-two run of steps (a subtree of the KL sum), none of them idle.
  int64_t iterations = 1;
  while (iterations * wanted < steps) iterations *= 2;
  return {rows, cols, ceil_div(rows, kBlock / team), team, ceil_div(steps, iterations), iterations};
}

// gridDim.x: the row tiles, capped (the kernels loop over the rest).
inline int64_t grid_x(const Tiling& t, int multiprocessors) {
  return std::min(t.row_tiles, int64_t{multiprocessors} * (2048 / kBlock) * 8);
}

// gridDim.y: the splits, capped at CUDA's limit (the kernels loop over the rest).
inline int64_t grid_y(const Tiling& t) { return std::min<int64_t>(t.splits, 65535); }

inline int64_t sum_partials_blocks(int64_t rows, int multiprocessors) {
  return std::min(ceil_div(rows, kBlock / kWarp), target_blocks(multiprocessors));
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

// A prior's view; an absent one has null data, which load_group reads as 0.
template <typename S>
Strided<S> prior_or_null(const std::optional<PriorView>& p) {
  return p.has_value() ? strided_prior<S>(*p) : Strided<S>{nullptr, 0, 0};
}

// The launch of a forward pass: the kernel's pointers, the tiling, the path, and the buffer
// of KL partials.
template <typename S>
struct ForwardPlan {
  ForwardPointers<S> pointers;
  Tiling tiling;
  bool vec;             // launch the vector-path kernel
  at::Tensor partials;  // [rows, splits] KL partials when a row spans several blocks
};

// The launch of a backward pass.
template <typename S>
struct BackwardPlan {
  BackwardPointers<S> pointers;
  Tiling tiling;
  bool vec;
};

template <typename S>
ForwardPlan<S> plan_forward(const ForwardTensors& a, int multiprocessors) {
  using T = at::opmath_type<S>;
  constexpr int kVecGroup = vector_group<S>();
  ForwardPlan<S> plan;
  ForwardPointers<S>& p = plan.pointers;
  p.mu = rows_or_null<S>(a.mu);
  p.logvar = rows_or_null<S>(a.logvar);
  p.eps = rows_or_null<S>(a.eps);
  p.prior_mu = prior_or_null<S>(a.prior_mu);
  p.prior_logvar = prior_or_null<S>(a.prior_logvar);
  p.seed = a.z.defined() && a.seed.defined() ? a.seed.const_data_ptr<int64_t>() : nullptr;
  p.has_prior = a.prior_mu.has_value() || a.prior_logvar.has_value();
  p.z = data_or_null<S>(a.z);
  p.kl = data_or_null<T>(a.kl);
  const int64_t rows = a.shape.rows, cols = a.shape.cols;
  plan.vec = cols % kVecGroup == 0 && vectorizable(p.mu, kVecGroup) &&
             vectorizable(p.logvar, kVecGroup) && vectorizable(p.eps, kVecGroup) &&
             vectorizable(p.prior_mu, kVecGroup) && vectorizable(p.prior_logvar, kVecGroup) &&
             vectorizable_output(p.z);
  plan.tiling =
      make_tiling(rows, cols, plan.vec ? kVecGroup : kScalarGroup, plan.vec, multiprocessors);
  if (p.kl != nullptr && plan.tiling.splits > 1) {
    const at::Tensor partials = at::empty({rows, plan.tiling.splits}, a.kl.options());
    p.kl = partials.mutable_data_ptr<T>();
    plan.partials = partials;
  }
  return plan;
}

template <typename S>
BackwardPlan<S> plan_backward(const BackwardTensors& a, int multiprocessors) {
  using T = at::opmath_type<S>;
  constexpr int kVecGroup = vector_group<S>();
  // Operands a term does not need stay null, so the kernel does not read them.
  const bool has_gz = a.grad_z.defined(), has_gkl = a.grad_kl.defined();
  const Strided<S> none{nullptr, 0, 0};
  BackwardPlan<S> plan;
  BackwardPointers<S>& p = plan.pointers;
  p.grad_z = rows_or_null<S>(a.grad_z);
  p.mu = has_gkl ? rows_or_null<S>(a.mu) : none;
  p.logvar = rows_or_null<S>(a.logvar);
  p.eps = has_gz ? rows_or_null<S>(a.eps) : none;
  p.prior_mu = has_gkl ? prior_or_null<S>(a.prior_mu) : none;
  p.prior_logvar = has_gkl ? prior_or_null<S>(a.prior_logvar) : none;
  p.grad_kl = has_gkl ? a.grad_kl.const_data_ptr<T>() : nullptr;
  p.seed = has_gz && !a.eps.defined() ? a.seed.const_data_ptr<int64_t>() : nullptr;
  p.has_prior = a.prior_mu.has_value() || a.prior_logvar.has_value();
  p.grad_mu = data_or_null<S>(a.grad_mu);
  p.grad_logvar = data_or_null<S>(a.grad_logvar);
  p.grad_prior_mu = data_or_null<S>(a.grad_prior_mu);
  p.grad_prior_logvar = data_or_null<S>(a.grad_prior_logvar);
  const int64_t cols = a.shape.cols;
  plan.vec = cols % kVecGroup == 0 && vectorizable(p.grad_z, kVecGroup) &&
             vectorizable(p.mu, kVecGroup) && vectorizable(p.logvar, kVecGroup) &&
             vectorizable(p.eps, kVecGroup) && vectorizable(p.prior_mu, kVecGroup) &&
             vectorizable(p.prior_logvar, kVecGroup) && vectorizable_output(p.grad_mu) &&
             vectorizable_output(p.grad_logvar) && vectorizable_output(p.grad_prior_mu) &&
             vectorizable_output(p.grad_prior_logvar);
  plan.tiling = make_tiling(a.shape.rows, cols, plan.vec ? kVecGroup : kScalarGroup, plan.vec,
                            multiprocessors);
  return plan;
}

// ------------------------------------------------------------------------- launches

// The kernel launches of one call, in order. launch(kernel, grid, block, args...) runs
// kernel<<<grid, block>>>(args...): on the current stream in kernels_cuda.cu, on emulated
// threads in the CPU emulation (tests/cuda_emulation/), which so runs exactly these plans.
template <typename S, typename Launch>
void run_forward(const ForwardTensors& a, int multiprocessors, Launch&& launch) {
  using T = at::opmath_type<S>;
  constexpr int kVecGroup = vector_group<S>();
  if (a.shape.rows == 0) return;
  if (a.shape.cols == 0) {
    if (a.kl.defined()) a.kl.zero_();
    return;
  }
  const ForwardPlan<S> plan = plan_forward<S>(a, multiprocessors);
  const dim3 grid(static_cast<unsigned>(grid_x(plan.tiling, multiprocessors)),
                  static_cast<unsigned>(grid_y(plan.tiling)));
  if (plan.vec) {
    launch(forward_kernel<S, kVecGroup, true>, grid, dim3(kBlock), plan.pointers, plan.tiling);
  } else {
    launch(forward_kernel<S, kScalarGroup, false>, grid, dim3(kBlock), plan.pointers, plan.tiling);
  }
  if (plan.partials.defined()) {
    const int64_t rows = a.shape.rows;
    launch(sum_partials_kernel<T>,
           dim3(static_cast<unsigned>(sum_partials_blocks(rows, multiprocessors))), dim3(kBlock),
           plan.pointers.kl, plan.tiling.splits, rows, a.kl.mutable_data_ptr<T>());
  }
}

template <typename S, typename Launch>
void run_backward(const BackwardTensors& a, int multiprocessors, Launch&& launch) {
  constexpr int kVecGroup = vector_group<S>();
  if (a.shape.rows == 0 || a.shape.cols == 0) return;
  const BackwardPlan<S> plan = plan_backward<S>(a, multiprocessors);
  const dim3 grid(static_cast<unsigned>(grid_x(plan.tiling, multiprocessors)),
                  static_cast<unsigned>(grid_y(plan.tiling)));
  if (plan.vec) {
    launch(backward_kernel<S, kVecGroup, true>, grid, dim3(kBlock), plan.pointers, plan.tiling);
  } else {
    launch(backward_kernel<S, kScalarGroup, false>, grid, dim3(kBlock), plan.pointers, plan.tiling);
  }
}

}  // namespace cuda_kernels
}  // namespace vae_ext
