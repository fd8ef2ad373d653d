// Launch planning at every scale: CUDA's launch limits for shapes up to one row of 2^27
// columns, 2^31 + 3 rows and large 4-d latents (planned on stride-0 views: no allocation),
// and the kernels' int64 index arithmetic beyond 2^31 elements, run on the emulation for
// the last row tile of such a tensor with its operands mapped onto small buffers.
#include "plan_tests.h"

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cuda_emu.h"
// cuda_emu.h first: it defines the CUDA qualifiers and built-ins the device code uses.
#include "../../csrc/cuda/kernels_cuda.cuh"

namespace vae_ext {
namespace cuda_emulation {
namespace {

using namespace cuda_kernels;

int g_failures = 0;
int g_checks = 0;

void check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL plan: %s\n", what.c_str());
  }
}

// CUDA's limits (compute capability 7.0 and later).
constexpr int64_t kMaxGridX = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxGridYZ = 65535;
constexpr int kMaxBlockThreads = 1024;

std::string shape_string(int64_t rows, int64_t cols, int group, int sms) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "] group " +
         std::to_string(group) + " sms " + std::to_string(sms);
}

// A tiling within CUDA's limits that gives every row to exactly one team, and every split a
// power-of-two run of team-wide steps with work in it, each step whole leaves of the KL sum
// or the whole row (csrc/row_sum.h).
void check_tiling(const Tiling& t, int64_t rows, int64_t cols, int group, bool vec, int sms) {
  const std::string at = shape_string(rows, cols, group, sms) + (vec ? " vector" : " scalar");
  const int64_t gx = grid_x(t, sms), gy = grid_y(t);
  check(t.rows == rows && t.cols == cols, at + ": the tiling's shape");
  check(t.team >= 1 && t.team <= kBlock && (t.team & (t.team - 1)) == 0,
        at + ": team " + std::to_string(t.team) + " is a power of two in [1, kBlock]");
  check(t.splits >= 1 && gy >= 1 && gy <= kMaxGridYZ && gy <= t.splits,
        at + ": gridDim.y " + std::to_string(gy) + " in [1, min(65535, splits)]");
  check(t.splits == 1 || t.team == kBlock, at + ": only whole-block rows are split");
  check(t.iterations >= 1 && (t.iterations & (t.iterations - 1)) == 0,
        at + ": steps per split " + std::to_string(t.iterations) + " a power of two");
  const int64_t groups = row_groups(cols, group, vec);
  check(
      (t.splits - 1) * t.team * t.iterations < groups && t.splits * t.team * t.iterations >= groups,
      at + ": the splits cover the row, none idle");
  check(int64_t{t.team} * group >= kSumLeaf || int64_t{t.team} >= groups,
        at + ": a team-wide step is whole leaves or the whole row");
  check(gx >= 1 && gx <= kMaxGridX && gx <= t.row_tiles,
        at + ": gridDim.x " + std::to_string(gx) + " in [1, min(2^31 - 1, row tiles)]");
  const int64_t rows_per_block = kBlock / t.team;
  check(t.row_tiles >= 1 && t.row_tiles * rows_per_block >= rows &&
            (t.row_tiles - 1) * rows_per_block < rows,
        at + ": the row tiles cover every row, none empty");
  if (t.splits > 1) {
    const int64_t sp = sum_partials_blocks(rows, sms);
    check(sp >= 1 && sp <= kMaxGridX, at + ": sum_partials gridDim.x " + std::to_string(sp));
  }
}

void limits_at_every_scale() {
  static_assert(kBlock >= 1 && kBlock <= kMaxBlockThreads && kBlock % kWarp == 0,
                "a block is whole warps within CUDA's limit");
  const int64_t rows_list[] = {1,
                               2,
                               3,
                               255,
                               256,
                               257,
                               65535,
                               65536,
                               1 << 20,
                               1 << 24,
                               (int64_t{1} << 31) - 1,
                               int64_t{1} << 31,
                               (int64_t{1} << 31) + 3,
                               int64_t{1} << 40};
  const int64_t cols_list[] = {1,
                               2,
                               3,
                               4,
                               5,
                               7,
                               8,
                               9,
                               1023,
                               1024,
                               4099,
                               65536,
                               1 << 20,
                               1 << 27,
                               (1 << 27) + 3,
                               int64_t{1} << 31,
                               int64_t{1} << 40};
  struct Path {
    int group;
    bool vec;
  };
  const Path paths[] = {{kScalarGroup, false},
                        {vector_group<float>(), true},
                        {vector_group<c10::Half>(), true},
                        {vector_group<double>(), true}};
  const int sms_list[] = {1, 7, 108, 114, 132, 1024};
  for (int64_t rows : rows_list) {
    for (int64_t cols : cols_list) {
      if (rows > (int64_t{1} << 62) / cols) continue;  // no such tensor
      for (const Path& path : paths) {
        for (int sms : sms_list) {
          check_tiling(make_tiling(rows, cols, path.group, path.vec, sms), rows, cols, path.group,
                       path.vec, sms);
        }
      }
    }
  }
}

// A tensor of any size backed by one element: every stride 0 (plans are made, never run).
at::Tensor fake(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::empty({1}, at::TensorOptions().dtype(dtype))
      .as_strided(sizes, std::vector<int64_t>(sizes.size(), 0));
}

// plan_forward and plan_backward themselves, on tensors of the named extreme shapes.
template <typename S>
void extreme_plans(at::IntArrayRef sizes, int sms) {
  const at::ScalarType dtype = c10::CppTypeToScalarType<S>::value;
  const at::ScalarType compute = at::toOpMathType(dtype);
  ForwardTensors f;
  f.mu = fake(sizes, dtype);
  f.shape = latent_shape(f.mu);
  f.logvar = fake(sizes, dtype);
  f.seed = fake({1}, at::kLong);
  f.z = fake(sizes, dtype);
  f.kl = fake({f.shape.rows}, compute);
  const ForwardPlan<S> fp = plan_forward<S>(f, sms);
  const int group = fp.vec ? vector_group<S>() : kScalarGroup;
  check_tiling(fp.tiling, f.shape.rows, f.shape.cols, group, fp.vec, sms);
  check(fp.partials.defined() == (fp.tiling.splits > 1),
        "partials exactly when rows are split, " +
            shape_string(f.shape.rows, f.shape.cols, group, sms));

  BackwardTensors b;
  b.mu = f.mu;
  b.shape = f.shape;
  b.logvar = f.logvar;
  b.seed = f.seed;
  b.grad_z = fake(sizes, dtype);
  b.grad_kl = fake({f.shape.rows}, compute);
  b.grad_mu = fake(sizes, dtype);
  b.grad_logvar = fake(sizes, dtype);
  const BackwardPlan<S> bp = plan_backward<S>(b, sms);
  check_tiling(bp.tiling, b.shape.rows, b.shape.cols, bp.vec ? vector_group<S>() : kScalarGroup,
               bp.vec, sms);
}

void extreme_shapes() {
  const int64_t big_rows = (int64_t{1} << 31) + 3;
  for (int sms : {1, 108, 132}) {
    extreme_plans<float>({1, int64_t{1} << 27}, sms);  // one row of 2^27 columns
    extreme_plans<c10::BFloat16>({1, (int64_t{1} << 27) + 3}, sms);
    extreme_plans<float>({big_rows, 1}, sms);  // 2^31 + 3 rows of one column
    extreme_plans<double>({big_rows, 3}, sms);
    extreme_plans<c10::Half>({big_rows, 1}, sms);
    extreme_plans<float>({8, 4, 4096, 4096}, sms);  // 4-d latents: 2^26 columns a row
    extreme_plans<c10::Half>({65536, 3, 1024, 1024}, sms);
    extreme_plans<float>({big_rows, 1, 1, 1}, sms);
  }
  check(latent_shape(fake({65536, 3, 1024, 1024}, at::kHalf)).cols == 3 * 1024 * 1024,
        "a 4-d latent's row is the product of dims 1..");
}

// The index arithmetic past 2^31 elements: the last row tile of a [2^31 + 3, cols] tensor
// (flat indices near 2^31 * cols, Philox block numbers past 2^32) run alone on the emulation,
// each operand's pointer moved back so that those rows land in a buffer of their own. The
// block is run on a grid of (tile + 1) blocks, so that it does that tile only.
template <int G, bool kVec>
void far_rows(int64_t cols) {
  using S = float;
  const int64_t rows = (int64_t{1} << 31) + 3;
  const Tiling t = make_tiling(rows, cols, G, kVec, 1);
  const int64_t rows_per_block = kBlock / t.team, tile = t.row_tiles - 1;
  const int64_t first = tile * rows_per_block, n = rows - first;
  const std::string at = shape_string(rows, cols, G, 1) + " last row tile";
  check(t.splits == 1 && tile < kMaxGridX, at + ": one block per tile");
  // Small integers and logvar 0 keep every KL sum exact, whatever the order.
  at::manual_seed(11);
  const at::Tensor mu = at::randint(1, 4, {n, cols}, at::kFloat);
  const at::Tensor lv = at::zeros({n, cols}, at::kFloat);
  const at::Tensor gz = at::randn({n, cols}, at::kFloat);
  const at::Tensor gkl = at::randn({n}, at::kFloat);
  at::Tensor z = at::empty({n, cols}), kl = at::empty({n}), gmu = at::empty({n, cols});
  at::Tensor glv = at::empty({n, cols});
  const int64_t seed = 0x0123456789abcdefLL;
  const int64_t shift = first * cols;  // elements before the buffer's first row
  auto back = [&](const at::Tensor& x) { return x.data_ptr<S>() - shift; };

  ForwardPointers<S> fp{};
  fp.mu = {back(mu), cols, 1};
  fp.logvar = {back(lv), cols, 1};
  fp.eps = fp.prior_mu = fp.prior_logvar = {nullptr, 0, 1};
  fp.seed = &seed;
  fp.has_prior = false;
  fp.z = back(z);
  fp.kl = kl.data_ptr<float>() - first;
  const uint3 only{static_cast<unsigned>(tile), 0, 0};
  const dim3 grid(static_cast<unsigned>(tile + 1)), block(kBlock);
  cuda_emu::Launch{&only}(forward_kernel<S, G, kVec>, grid, block, fp, t);

  BackwardPointers<S> bp{};
  bp.grad_z = {back(gz), cols, 1};
  bp.mu = {back(mu), cols, 1};
  bp.logvar = {back(lv), cols, 1};
  bp.eps = bp.prior_mu = bp.prior_logvar = {nullptr, 0, 1};
  bp.grad_kl = gkl.data_ptr<float>() - first;
  bp.seed = &seed;
  bp.has_prior = false;
  bp.grad_mu = back(gmu);
  bp.grad_logvar = back(glv);
  cuda_emu::Launch{&only}(backward_kernel<S, G, kVec>, grid, block, bp, t);

  // The same per-element math on the host (csrc/vae_math.h, csrc/philox.h).
  const PhiloxKey key = philox_key(seed);
  int64_t wrong = 0;
  for (int64_t r = 0; r < n; ++r) {
    double sum = 0;
    const int64_t b = first + r;
    for (int64_t j = 0; j < cols; ++j) {
      const float m = mu[r][j].item<float>(), l = lv[r][j].item<float>();
      const float g = gz[r][j].item<float>(), gk = gkl[r].item<float>();
      const float e = normal_at(key, static_cast<uint64_t>(b * cols + j));
      const KlGrad<float> k = kl_grad_standard<float>(gk, m, l);
      float want_gmu = g, want_glv = reparam_grad_logvar(g, l, e);
      want_gmu += k.mu;
      want_glv += k.lv;
      wrong += z[r][j].item<float>() != reparam(m, l, e);
      wrong += gmu[r][j].item<float>() != want_gmu;
      wrong += glv[r][j].item<float>() != want_glv;
      sum += kl_standard<float>(m, l);
    }
    wrong += kl[r].item<float>() != static_cast<float>(sum);
  }
  check(wrong == 0, at + ": " + std::to_string(wrong) +
                        " values differ from the host math at flat indices past 2^31");
}

// One row of 2^20 + 3 * 128 + 4 columns (split over several blocks of many team-wide steps;
// a multiple of the vector group, as the vector path requires), KL only, every block of the
// planned grid: the row's operands are broadcast scalars (column stride 0), so nothing of that
// size is allocated. Each term is 1/2, so the sum is exact in any order and says each element
// was counted once. (2^27 columns, the planning limit checked above, would take the emulation
// most of an hour: the KL takes warp collectives per team-wide step.)
void long_row() {
  const int64_t cols = (int64_t{1} << 20) + 3 * 128 + 4;
  static_assert(((int64_t{1} << 20) + 3 * 128 + 4) % vector_group<float>() == 0);
  const int sms = 1;
  const float one = 1.0f, zero = 0.0f;
  const Tiling t = make_tiling(1, cols, vector_group<float>(), true, sms);
  check_tiling(t, 1, cols, vector_group<float>(), true, sms);
  check(t.splits > 1, "one long row: planned as one split, so the split tree goes untested");
  at::Tensor partials = at::empty({t.splits}), kl = at::empty({1});
  ForwardPointers<float> p{};
  p.mu = {&one, 0, 0};
  p.logvar = {&zero, 0, 0};
  p.eps = p.prior_mu = p.prior_logvar = {nullptr, 0, 1};
  p.seed = nullptr;
  p.has_prior = false;
  p.z = nullptr;
  p.kl = t.splits > 1 ? partials.data_ptr<float>() : kl.data_ptr<float>();
  const dim3 grid(static_cast<unsigned>(grid_x(t, sms)), static_cast<unsigned>(grid_y(t)));
  cuda_emu::Launch{}(forward_kernel<float, vector_group<float>(), true>, grid, dim3(kBlock), p, t);
  if (t.splits > 1) {
    cuda_emu::Launch{}(sum_partials_kernel<float>,
                       dim3(static_cast<unsigned>(sum_partials_blocks(1, sms))), dim3(kBlock), p.kl,
                       t.splits, int64_t{1}, kl.data_ptr<float>());
  }
  check(kl.item<float>() == 0.5f * static_cast<float>(cols),
        "one row of " + std::to_string(cols) + " columns: KL " + std::to_string(kl.item<float>()) +
            ", want cols / 2");
}

}  // namespace

int run_plan_tests(bool quick) {
  g_failures = g_checks = 0;
  limits_at_every_scale();
  extreme_shapes();
  far_rows<kScalarGroup, false>(9);
  far_rows<vector_group<float>(), true>(8);
  if (!quick) long_row();
  std::printf("launch planning: %d checks, %d failures%s\n", g_checks, g_failures,
              quick ? " (quick: no long-row run)" : "");
  return g_failures;
}

}  // namespace cuda_emulation
}  // namespace vae_ext
