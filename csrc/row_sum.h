// The order in which every device adds up the per-element KL terms of one row (the per-sample
// KL): a fixed binary tree that depends only on the row length n, so the sum is the same bits
// on the CPU at any thread count, on any GPU with any launch plan, and in
// vae_ext/reference.py (docs/determinism.md):
//
// 1. The row's terms t[0, n) are cut into leaves of kLeaf = 128 consecutive terms from
//    column 0; the last leaf is padded with +0.
// 2. A leaf is an 8 x 16 matrix, t[128 f + 16 r + l] in row r, lane l. Its 8 rows are added
//    lane by lane as a pairwise tree, ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), and
//    the 16 lane sums c0..c15 of the result as a pairwise tree of neighbours,
//    (((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7))) + (... c8 .. c15 ...).
// 3. The leaf sums s0..s(m-1), m = ceil(n / 128), are added as a pairwise tree of neighbours
//    padded with +0 to a power of two: sum(s[a, a + 2w)) = sum(s[a, a + w)) + sum(s[a + w,
//    a + 2w)) for every aligned power-of-two range.
//
// A KL term is never -0 (it is +0, positive or NaN), so adding a +0 pad changes nothing and
// implementations may skip the pads; they may also evaluate any aligned power-of-two
// subtree on its own (a SIMD vector, a warp, a block, a split row) and combine the
// subtrees in the tree's order. Row sums of an empty row are +0.
#pragma once

#include <cstdint>

#include "macros.h"

namespace vae_ext {

constexpr int kSumLanes = 16;
constexpr int kSumLeafRows = 8;
constexpr int kSumLeaf = kSumLanes * kSumLeafRows;

// c[0] + ... + c[15] as the pairwise tree of neighbours (step 2).
template <typename T>
VAE_HD T sum_lanes(const T* c) {
  T level[kSumLanes / 2];
  for (int q = 0; q < kSumLanes / 2; ++q) level[q] = c[2 * q] + c[2 * q + 1];
  for (int width = kSumLanes / 4; width >= 1; width /= 2) {
    for (int q = 0; q < width; ++q) level[q] = level[2 * q] + level[2 * q + 1];
  }
  return level[0];
}

// Step 3 on a stream: push the sums of consecutive aligned subtrees of equal size in order;
// total() is their pairwise tree, the missing ones counted as +0. level[k] holds a finished
// subtree of 2^k pushes while bit k of count is set (a binary counter). Holds up to
// 2^kDepth - 1 pushes.
template <typename T, int kDepth>
struct PairwiseSum {
  static_assert(kDepth <= 32, "count is 32 bits");
  T level[kDepth];
  uint32_t count = 0;

  VAE_HD_MEMBER void push(T s) {
    int k = 0;
    for (; (count >> k) & 1u; ++k) s = level[k] + s;
    level[k] = s;
    ++count;
  }

  VAE_HD_MEMBER T total() const {
    T sum(0);
    bool any = false;
    for (int k = 0; k < kDepth; ++k) {
      if ((count >> k) & 1u) {
        sum = any ? level[k] + sum : level[k];
        any = true;
      }
    }
    return sum;
  }
};

}  // namespace vae_ext
