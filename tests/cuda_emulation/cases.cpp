#include "cases.h"

#include <c10/util/Exception.h>

#include <map>

#include "emulated_ops.h"

namespace vae_ext {
namespace cuda_emulation {
namespace {

const char* prior_name(Prior p) {
  switch (p) {
    case Prior::kNone: return "none";
    case Prior::kScalar: return "scalar";
    case Prior::kLatent: return "per-latent";
    case Prior::kFull: return "full";
    case Prior::kFullStrided: return "full-strided";
    case Prior::kMuOnly: return "mu-only";
    default: return "logvar-only";
  }
}

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kContiguous: return "contiguous";
    case Layout::kStridedRows: return "strided-rows";
    case Layout::kMisaligned: return "misaligned";
    default: return "permuted-4d";
  }
}

const std::vector<Prior>& every_prior() {
  static const std::vector<Prior> all = {Prior::kNone,      Prior::kScalar,      Prior::kLatent,
                                         Prior::kFull,      Prior::kFullStrided, Prior::kMuOnly,
                                         Prior::kLogvarOnly};
  return all;
}

const at::ScalarType kDtypes[] = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16};

// SM counts the shapes rotate through: one SM (few blocks: grid-stride loops, few splits),
// a small part, and the A100 / H100 PCIe / H100 SXM and H200 counts.
const int kSms[] = {1, 7, 108, 114, 132};

// Column counts at which the planned team size is smallest and largest, for each team size
// the planning chooses for cols in [1, limit] on this path (vector path: multiples of the
// vector group; scalar path: cols % 4 != 0, the masked case).
std::map<int, std::pair<int64_t, int64_t>> team_ranges(at::ScalarType dtype, bool vec, int64_t rows,
                                                       int sms, int64_t limit) {
  const int group = vector_group_of(dtype);
  std::map<int, std::pair<int64_t, int64_t>> ranges;
  for (int64_t cols = 1; cols <= limit; ++cols) {
    if (vec ? cols % group != 0 : cols % 4 == 0) continue;
    const int team = plan_of(dtype, rows, cols, vec, sms).team;
    auto it = ranges.find(team);
    if (it == ranges.end()) {
      ranges[team] = {cols, cols};
    } else {
      it->second.second = cols;
    }
  }
  return ranges;
}

// About the fewest rows for which the blocks loop over several row tiles.
int64_t rows_for_loop(at::ScalarType dtype, int64_t cols, bool vec, int sms) {
  for (int64_t rows = 1; rows < (int64_t{1} << 26); rows *= 2) {
    const PlanInfo p = plan_of(dtype, rows, cols, vec, sms);
    if (p.grid_x < p.row_tiles) {
      int64_t lo = rows / 2, hi = rows;  // bisect for the first row count that loops
      while (hi - lo > 1) {
        const int64_t mid = (lo + hi) / 2;
        const PlanInfo q = plan_of(dtype, mid, cols, vec, sms);
        (q.grid_x < q.row_tiles ? hi : lo) = mid;
      }
      return hi | 1;  // odd: the last row tile is partial when a block holds several rows
    }
  }
  TORCH_CHECK(false, "no row count makes the blocks loop over row tiles");
}

}  // namespace

std::string Variant::name() const {
  std::string s;
  if (!backward) {
    s = want_z && want_kl ? "reparameterize_kl" : want_z ? "reparameterize" : "gaussian_kl";
    if (want_z) s += sampled ? " eps=sampled" : " eps=given";
  } else if (reparameterize_backward) {
    s = std::string("reparameterize_backward eps=") + (sampled ? "sampled" : "given");
  } else {
    s = std::string("reparameterize_kl_backward grad_z=") + (grad_z ? "yes" : "no") +
        " grad_kl=" + (grad_kl ? "yes" : "no");
    if (grad_z) s += sampled ? " eps=sampled" : " eps=given";
    s += std::string(" prior_grads=") + (prior_grads ? "yes" : "no");
  }
  if (want_kl || (backward && !reparameterize_backward))
    s += std::string(" prior=") + prior_name(prior);
  return s;
}

std::vector<Variant> all_variants() {
  std::vector<Variant> all;
  for (bool sampled : {false, true}) {  // z only
    Variant v;
    v.want_z = true;
    v.sampled = sampled;
    all.push_back(v);
  }
  for (Prior prior : every_prior()) {  // KL only
    Variant v;
    v.want_kl = true;
    v.prior = prior;
    all.push_back(v);
  }
  for (bool sampled : {false, true}) {  // z and KL
    for (Prior prior : every_prior()) {
      Variant v;
      v.want_z = v.want_kl = true;
      v.sampled = sampled;
      v.prior = prior;
      all.push_back(v);
    }
  }
  for (bool sampled : {false, true}) {
    Variant v;
    v.backward = v.reparameterize_backward = v.grad_z = true;
    v.sampled = sampled;
    all.push_back(v);
  }
  for (bool grad_z : {true, false}) {
    for (bool grad_kl : {true, false}) {
      for (bool sampled : {false, true}) {
        if (sampled && !grad_z) continue;  // eps is not needed without grad_z
        for (Prior prior : every_prior()) {
          if (!grad_kl && prior != Prior::kNone && prior != Prior::kFull) continue;
          for (bool prior_grads : {false, true}) {
            Variant v;
            v.backward = true;
            v.grad_z = grad_z;
            v.grad_kl = grad_kl;
            v.sampled = sampled;
            v.prior = prior;
            v.prior_grads = prior_grads;
            all.push_back(v);
          }
        }
      }
    }
  }
  return all;
}

std::string Shape::name() const {
  return std::string(c10::toString(dtype)) + " [" + std::to_string(rows) + ", " +
         std::to_string(cols) + "] " + layout_name(layout) + " sms=" + std::to_string(sms) +
         (data == Data::kExactSums ? " exact-sum data"
          : data == Data::kSpecial ? " special values"
                                   : "") +
         " (" + why + ")";
}

std::vector<Shape> plan_shapes(bool quick) {
  std::vector<Shape> shapes;
  size_t turn = 0;
  auto next_sms = [&] { return kSms[turn++ % std::size(kSms)]; };
  auto next_data = [&] {
    const size_t k = shapes.size() % 4;
    return k == 1 ? Data::kExactSums : k == 3 ? Data::kSpecial : Data::kRandom;
  };
  const int block = block_threads();
  for (at::ScalarType dtype : kDtypes) {
    const int group = vector_group_of(dtype);
    for (bool vec : {true, false}) {
      const char* path = vec ? "vector path" : "scalar path";
      const int64_t limit = int64_t{block} * group * 8;
      const auto ranges = team_ranges(dtype, vec, 3, 1, limit);
      for (const auto& [team, range] : ranges) {
        const std::string why = std::string(path) + ", team " + std::to_string(team);
        // Smallest and largest rows of this team size; odd row counts leave the last row
        // tile partial, and on the scalar path shift the rows against the groups.
        const Layout layout = vec ? Layout::kContiguous : Layout::kStridedRows;
        shapes.push_back({dtype, 3, range.first, Layout::kContiguous, next_sms(), next_data(),
                          why + ", fewest columns"});
        if (!quick || team == block) {
          shapes.push_back({dtype, team == block ? 2 : 5, range.second, layout, next_sms(),
                            next_data(), why + ", most columns"});
        }
      }
      // Blocks looping over several row tiles (one SM: the fewest blocks): short rows, and the
      // shortest rows that take a whole block (the block-wide KL sum, tile after tile, is
      // where a missing barrier would race). Run with a KL.
      for (int64_t cols : {vec ? int64_t{group} : int64_t{3}, ranges.at(block).first}) {
        Shape loop{dtype,
                   rows_for_loop(dtype, cols, vec, 1),
                   cols,
                   Layout::kContiguous,
                   1,
                   next_data(),
                   std::string(path) + ", blocks loop over row tiles"};
        loop.with_kl = true;
        shapes.push_back(loop);
      }
    }
    // The scalar path for a row length the vector path takes, from a misaligned start; and a
    // 4-d latent whose dims are permuted (the op copies it to rows of contiguous blocks).
    shapes.push_back({dtype, 6, int64_t{group} * 40, Layout::kMisaligned, next_sms(), next_data(),
                      "scalar path from a misaligned start"});
    if (!quick) {
      shapes.push_back({dtype, 4, int64_t{group} * 30, Layout::kPermuted4d, next_sms(), next_data(),
                        "4-d latent, permuted"});
    }
  }
  return shapes;
}

std::vector<Shape> matrix_shapes(bool quick) {
  std::vector<Shape> shapes;
  const int block = block_threads();
  for (at::ScalarType dtype : kDtypes) {
    const int group = vector_group_of(dtype);
    shapes.push_back({dtype, 5, int64_t{group} * 24, Layout::kStridedRows, 3, Data::kRandom,
                      "every variant, vector path"});
    if (quick) continue;
    shapes.push_back(
        {dtype, 7, 45, Layout::kContiguous, 132, Data::kSpecial, "every variant, scalar path"});
    // A row split over blocks: the smallest row length that takes a whole block.
    const int64_t cols =
        team_ranges(dtype, true, 2, 132, int64_t{block} * group * 8).at(block).first;
    shapes.push_back(
        {dtype, 2, cols, Layout::kContiguous, 132, Data::kExactSums, "every variant, split rows"});
  }
  return shapes;
}

}  // namespace cuda_emulation
}  // namespace vae_ext
