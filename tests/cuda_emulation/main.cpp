// Runs the CUDA kernels of csrc/cuda/kernels_cuda.cuh on the emulation for every launch plan
// the host code can choose and compares every output with the CPU kernels (README.md).
//
//   cuda_emulation [--quick] [--plans-only]
//
//   --quick       fewer shapes and variants (the ThreadSanitizer build runs this)
//   --plans-only  run the launch planning tests only
// Every output, the per-sample KL included (csrc/row_sum.h), must equal the CPU's bit for bit.
// Exit status: 0 when everything matched, 1 on any difference, 3 on an emulation error.
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cases.h"
#include "emulated_ops.h"
#include "plan_tests.h"
// Last: it defines the CUDA qualifiers as macros.
#include "cuda_emu.h"

namespace vae_ext {
namespace cuda_emulation {
namespace {

using OptTensor = std::optional<at::Tensor>;
using Outputs = std::vector<std::pair<std::string, at::Tensor>>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The ops as registered by the CPU kernels (csrc/cpu/), called through the dispatcher.
struct CpuOps {
  static at::Tensor reparameterize(const at::Tensor& mu, const at::Tensor& lv,
                                   const at::Tensor& eps) {
    static const auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
        "vae_ext::reparameterize");
    return h.call(mu, lv, eps);
  }
  static at::Tensor reparameterize_sampled(const at::Tensor& mu, const at::Tensor& lv,
                                           const at::Tensor& seed) {
    static const auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
        "vae_ext::reparameterize_sampled");
    return h.call(mu, lv, seed);
  }
  static at::Tensor gaussian_kl(const at::Tensor& mu, const at::Tensor& lv, const OptTensor& pmu,
                                const OptTensor& plv) {
    static const auto h =
        op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&)>(
            "vae_ext::gaussian_kl");
    return h.call(mu, lv, pmu, plv);
  }
  static std::tuple<at::Tensor, at::Tensor> reparameterize_kl(
      const at::Tensor& mu, const at::Tensor& lv, const OptTensor& eps, const OptTensor& seed,
      const OptTensor& pmu, const OptTensor& plv) {
    static const auto h = op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
        const OptTensor&)>("vae_ext::reparameterize_kl");
    return h.call(mu, lv, eps, seed, pmu, plv);
  }
  static at::Tensor reparameterize_backward(const at::Tensor& gz, const at::Tensor& lv,
                                            const OptTensor& eps, const OptTensor& seed) {
    static const auto h =
        op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&)>(
            "vae_ext::reparameterize_backward");
    return h.call(gz, lv, eps, seed);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> reparameterize_kl_backward(
      const OptTensor& gz, const OptTensor& gkl, const at::Tensor& mu, const at::Tensor& lv,
      const OptTensor& eps, const OptTensor& seed, const OptTensor& pmu, const OptTensor& plv,
      bool prior_grads) {
    static const auto h = op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
        const OptTensor&, const OptTensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
        const OptTensor&, const OptTensor&, const OptTensor&, bool)>(
        "vae_ext::reparameterize_kl_backward");
    return h.call(gz, gkl, mu, lv, eps, seed, pmu, plv, prior_grads);
  }
};

struct Inputs {
  at::Tensor mu, lv, eps, seed, gz, gkl;
  OptTensor pmu, plv;
};

// ------------------------------------------------------------------------- inputs

std::vector<int64_t> latent_sizes(const Shape& s) {
  if (s.layout == Layout::kPermuted4d) {
    TORCH_CHECK(s.cols % 6 == 0, "a permuted 4-d latent needs cols % 6 == 0");
    return {s.rows, 2, 3, s.cols / 6};
  }
  return {s.rows, s.cols};
}

// Values of one operand, in float64 before the cast to the dtype.
at::Tensor values(const Shape& s, const char* role, at::IntArrayRef sizes) {
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const std::string r = role;
  if (s.data == Data::kExactSums && (r == "mu" || r == "pmu")) {
    // Small integers and logvar 0: every KL term is a multiple of 1/2 and every partial sum
    // is exact, so any summation order gives the same bits.
    return at::randint(r == "mu" ? 1 : 0, r == "mu" ? 4 : 2, sizes, f64);
  }
  if (s.data == Data::kExactSums && (r == "lv" || r == "plv")) return at::zeros(sizes, f64);
  at::Tensor v = at::randn(sizes, f64);
  if (r == "lv") v.mul_(2.0);
  if (r == "pmu" || r == "plv") v.mul_(0.5);
  if (s.data == Data::kSpecial && v.numel() >= 8) {
    at::Tensor flat = v.view({-1});
    const int64_t n = flat.numel();
    if (r == "lv") {
      // exp's clamps, overflow, a zero and a tiny value; and a NaN.
      const double specials[] = {88.0, -104.0, 0.0, 1e-7, -30.0, 60000.0, -60000.0};
      for (size_t i = 0; i < std::size(specials); ++i) flat[i * n / 8] = specials[i];
      flat[n - 2] = std::numeric_limits<double>::quiet_NaN();
    }
    if (r == "mu") {
      flat[n - 1] = std::numeric_limits<double>::infinity();
      flat[n / 2] = std::numeric_limits<double>::quiet_NaN();
    }
    if (r == "eps" || r == "gz") flat[n / 3] = -std::numeric_limits<double>::infinity();
  }
  return v;
}

// A latent operand with the shape's layout, holding `v`: each allocated to its exact size,
// with the rows of the operand ending where the allocation ends.
at::Tensor laid_out(const Shape& s, const at::Tensor& v, int half) {
  const auto options = at::TensorOptions().dtype(s.dtype);
  at::Tensor t;
  switch (s.layout) {
    case Layout::kContiguous: t = at::empty(v.sizes(), options); break;
    case Layout::kStridedRows:  // one half of a [rows, 2 cols] tensor, as h.chunk(2, dim=1)
      t = at::empty({s.rows, 2 * s.cols}, options).narrow(1, half * s.cols, s.cols);
      break;
    case Layout::kMisaligned:
      t = at::empty({v.numel() + 1}, options).narrow(0, 1, v.numel()).view(v.sizes());
      break;
    case Layout::kPermuted4d:
      t = at::empty({s.rows, 2, s.cols / 6, 3}, options).transpose(2, 3);
      break;
  }
  t.copy_(v);
  return t;
}

OptTensor prior(const Shape& s, Prior kind, const char* role, bool wanted) {
  const auto options = at::TensorOptions().dtype(s.dtype);
  const std::vector<int64_t> sizes = latent_sizes(s);
  if (!wanted) return std::nullopt;
  switch (kind) {
    case Prior::kNone: return std::nullopt;
    case Prior::kScalar: return values(s, role, {}).to(s.dtype);
    case Prior::kLatent: return values(s, role, at::IntArrayRef(sizes).slice(1)).to(s.dtype);
    case Prior::kFullStrided:
      if (s.layout != Layout::kPermuted4d) {
        Shape strided = s;
        strided.layout = Layout::kStridedRows;
        return laid_out(strided, values(s, role, sizes), 1);
      }
      [[fallthrough]];
    default: return values(s, role, sizes).to(options);
  }
}

Inputs make_inputs(const Shape& s, const Variant& v, uint64_t case_index) {
  at::manual_seed(case_index);
  const std::vector<int64_t> sizes = latent_sizes(s);
  Inputs in;
  in.mu = laid_out(s, values(s, "mu", sizes), 0);
  in.lv = laid_out(s, values(s, "lv", sizes), 1);
  in.eps = laid_out(s, values(s, "eps", sizes), 1);
  in.gz = laid_out(s, values(s, "gz", sizes), 1);
  in.gkl = values(s, "gkl", {s.rows}).to(at::toOpMathType(s.dtype));
  // A seed whose high and low words both matter to the Philox key.
  in.seed =
      at::tensor({static_cast<int64_t>(0x5eed00000000ULL + case_index * 0x9e3779b1ULL)}, at::kLong);
  in.pmu = prior(s, v.prior, "pmu", v.prior != Prior::kLogvarOnly);
  in.plv = prior(s, v.prior, "plv", v.prior != Prior::kMuOnly);
  return in;
}

// ------------------------------------------------------------------------- one call

template <typename Ops>
Outputs call(const Inputs& in, const Variant& v) {
  OptTensor eps = v.sampled ? OptTensor() : OptTensor(in.eps);
  OptTensor seed = v.sampled ? OptTensor(in.seed) : OptTensor();
  if (!v.backward) {
    if (!v.want_kl) {
      return {{"z", v.sampled ? Ops::reparameterize_sampled(in.mu, in.lv, in.seed)
                              : Ops::reparameterize(in.mu, in.lv, in.eps)}};
    }
    if (!v.want_z) return {{"kl", Ops::gaussian_kl(in.mu, in.lv, in.pmu, in.plv)}};
    auto [z, kl] = Ops::reparameterize_kl(in.mu, in.lv, eps, seed, in.pmu, in.plv);
    return {{"z", z}, {"kl", kl}};
  }
  if (v.reparameterize_backward) {
    return {{"grad_logvar", Ops::reparameterize_backward(in.gz, in.lv, eps, seed)}};
  }
  if (!v.grad_z) eps = seed = std::nullopt;
  auto [gm, gl, gpm, gpl] = Ops::reparameterize_kl_backward(
      v.grad_z ? OptTensor(in.gz) : OptTensor(), v.grad_kl ? OptTensor(in.gkl) : OptTensor(), in.mu,
      in.lv, eps, seed, in.pmu, in.plv, v.prior_grads);
  return {{"grad_mu", gm}, {"grad_logvar", gl}, {"grad_prior_mu", gpm}, {"grad_prior_logvar", gpl}};
}

// ------------------------------------------------------------------------- comparison

struct Tally {
  int64_t cases = 0, outputs = 0, failures = 0;
};

std::string element_string(const at::Tensor& t, int64_t i) {
  const at::Tensor e = t.reshape({-1})[i];
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", e.to(at::kDouble).item<double>());
  return buf;
}

// First element whose bits differ, or -1.
int64_t first_difference(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  const auto* p = static_cast<const unsigned char*>(x.const_data_ptr());
  const auto* q = static_cast<const unsigned char*>(y.const_data_ptr());
  const size_t size = x.element_size();
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (std::memcmp(p + i * size, q + i * size, size) != 0) return i;
  }
  return -1;
}

bool compare(const Outputs& cpu, const Outputs& emu, const std::string& label, Tally& tally) {
  bool ok = true;
  auto fail = [&](const std::string& what) {
    ok = false;
    if (++tally.failures <= 20) std::printf("FAIL %s\n     %s\n", label.c_str(), what.c_str());
  };
  for (size_t k = 0; k < cpu.size(); ++k) {
    const std::string& name = cpu[k].first;
    const at::Tensor& a = emu[k].second;
    const at::Tensor& b = cpu[k].second;
    ++tally.outputs;
    if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) {
      fail(name + ": shape or dtype differs");
      continue;
    }
    const int64_t i = first_difference(a, b);
    if (i < 0) continue;
    fail(name + " differs in its bits at flat index " + std::to_string(i) + ": emulated " +
         element_string(a, i) + ", cpu " + element_string(b, i));
  }
  return ok;
}

// ------------------------------------------------------------------------- plan coverage

struct Coverage {
  std::map<std::string, int64_t> plans;  // plan description -> cases that ran it
  std::map<std::string, std::set<int>> teams;
  std::set<std::string> split, looping, kernels;

  void add(const std::vector<LaunchRecord>& launches) {
    std::set<std::string> seen;
    for (const LaunchRecord& r : launches) {
      kernels.insert(r.kernel);
      std::string plan = r.kernel;
      if (r.tiled) {
        teams[r.kernel].insert(r.team);
        plan += " team=" + std::to_string(r.team);
        if (r.splits > 1) {
          split.insert(r.kernel);
          plan += " split";
        }
        if (r.grid_x < r.row_tiles) {
          looping.insert(r.kernel);
          plan += " looping";
        }
      }
      seen.insert(plan);
    }
    for (const std::string& p : seen) ++plans[p];
  }

  // Every row kernel ran with every team size, split rows and looping blocks.
  int check(int block) const {
    int missing = 0;
    for (const auto& [kernel, team_set] : teams) {
      for (int team = 1; team <= block; team *= 2) {
        if (!team_set.count(team)) {
          std::printf("NOT COVERED: %s with team %d\n", kernel.c_str(), team);
          ++missing;
        }
      }
      if (!split.count(kernel)) {
        std::printf("NOT COVERED: %s with split rows\n", kernel.c_str());
        ++missing;
      }
      if (!looping.count(kernel)) {
        std::printf("NOT COVERED: %s with blocks looping over row tiles\n", kernel.c_str());
        ++missing;
      }
    }
    return missing;
  }
};

struct Options {
  bool quick = false, plans_only = false;
};

int run(const Options& opt) {
  const auto start = std::chrono::steady_clock::now();
  at::set_num_threads(1);  // the CPU kernels' results do not depend on it; keeps TSan quiet
  std::printf("launch planning tests\n");
  const int plan_failures = run_plan_tests(opt.quick);
  if (opt.plans_only) return plan_failures == 0 ? 0 : 1;

  const std::vector<Variant> variants = all_variants();
  std::vector<std::pair<Shape, std::vector<Variant>>> work;
  for (const Shape& s : matrix_shapes(opt.quick)) work.push_back({s, variants});
  // On the plan shapes, a rotating few forward and backward variants: sampled and given
  // eps, every output and gradient, priors and none meet the plans over the whole run.
  std::vector<Variant> forward, backward;
  for (const Variant& v : variants) (v.backward ? backward : forward).push_back(v);
  const size_t per_direction = opt.quick ? 1 : 2;
  size_t turn = 0;
  for (const Shape& s : plan_shapes(opt.quick)) {
    std::vector<Variant> some;
    for (size_t k = 0; k < per_direction; ++k, ++turn) {
      size_t f = turn * 5;
      while (s.with_kl && !forward[f % forward.size()].want_kl) ++f;
      some.push_back(forward[f % forward.size()]);
      some.push_back(backward[turn * 7 % backward.size()]);
    }
    work.push_back({s, some});
  }

  Tally tally;
  Coverage coverage;
  uint64_t case_index = 0;
  std::vector<std::pair<double, std::string>> shape_seconds;
  for (const auto& [shape, shape_variants] : work) {
    const auto shape_start = std::chrono::steady_clock::now();
    set_multiprocessors(shape.sms);
    for (const Variant& v : shape_variants) {
      const std::string label = shape.name() + " | " + v.name();
      cuda_emu::set_context(label);
      const Inputs in = make_inputs(shape, v, ++case_index);
      const Outputs cpu = call<CpuOps>(in, v);
      take_launches();
      const Outputs emu = call<EmulatedOps>(in, v);
      coverage.add(take_launches());
      ++tally.cases;
      compare(cpu, emu, label, tally);
    }
    shape_seconds.push_back(
        {std::chrono::duration<double>(std::chrono::steady_clock::now() - shape_start).count(),
         shape.name() + ", " + std::to_string(shape_variants.size()) + " variants"});
  }

  const int missing = coverage.check(block_threads());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const cuda_emu::LaunchStats& st = cuda_emu::stats();
  std::printf("\nlaunch plans run (kernel, team size, split rows, blocks looping over tiles):\n");
  for (const auto& [plan, cases] : coverage.plans) {
    std::printf("  %-58s %6lld cases\n", plan.c_str(), static_cast<long long>(cases));
  }
  std::printf(
      "\nsummary: %zu launch plans, %zu kernels, %lld cases (%zu shapes), %lld outputs compared, "
      "%lld failures\n",
      coverage.plans.size(), coverage.kernels.size(), static_cast<long long>(tally.cases),
      work.size(), static_cast<long long>(tally.outputs), static_cast<long long>(tally.failures));
  std::printf(
      "emulated: %lld launches, %lld blocks, %lld threads, %lld __syncthreads, %lld warp "
      "collectives\n",
      static_cast<long long>(st.launches), static_cast<long long>(st.blocks),
      static_cast<long long>(st.threads), static_cast<long long>(st.barriers),
      static_cast<long long>(st.shuffles));
  std::sort(shape_seconds.rbegin(), shape_seconds.rend());
  std::printf("slowest shapes:\n");
  for (size_t i = 0; i < std::min<size_t>(5, shape_seconds.size()); ++i) {
    std::printf("  %6.2f s  %s\n", shape_seconds[i].first, shape_seconds[i].second.c_str());
  }
  std::printf("plan test failures: %d, plans not covered: %d, time %.1f s\n", plan_failures,
              missing, seconds);
  const bool ok = tally.failures == 0 && plan_failures == 0 && missing == 0;
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace cuda_emulation
}  // namespace vae_ext

int main(int argc, char** argv) {
  vae_ext::cuda_emulation::Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      opt.quick = true;
    } else if (a == "--plans-only") {
      opt.plans_only = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--plans-only]\n", argv[0]);
      return 2;
    }
  }
  return vae_ext::cuda_emulation::run(opt);
}
