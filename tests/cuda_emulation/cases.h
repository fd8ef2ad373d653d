// The test cases of the emulation: shapes chosen from the launch planning itself, so that
// every plan the host code can choose is run, and the op calls ("variants") made on them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vae_ext {
namespace cuda_emulation {

enum class Prior { kNone, kScalar, kLatent, kFull, kFullStrided, kMuOnly, kLogvarOnly };
enum class Layout { kContiguous, kStridedRows, kMisaligned, kPermuted4d };
enum class Data { kRandom, kSpecial, kExactSums };

// One op call: which outputs (forward) or gradients (backward) are requested, and how.
struct Variant {
  bool backward = false;
  bool want_z = false, want_kl = false;  // forward
  bool grad_z = false, grad_kl = false;  // backward
  bool reparameterize_backward = false;  // backward through that op (grad_z only, no prior)
  bool sampled = false;                  // eps from the seed, else given
  bool prior_grads = false;
  Prior prior = Prior::kNone;
  std::string name() const;
};

// Every distinct combination (the full matrix).
std::vector<Variant> all_variants();

struct Shape {
  at::ScalarType dtype;
  int64_t rows, cols;
  Layout layout;  // of mu and logvar (eps, grad_z and full priors follow their own)
  int sms;        // multiprocessor count the plan is made for
  Data data;
  std::string why;       // which plan it was chosen for
  bool with_kl = false;  // its forward calls must compute the KL
  std::string name() const;
};

// Shapes that reach every team size on the vector and scalar paths of every dtype, split
// rows, blocks looping over several row tiles, and the layouts; found by asking the planning
// code (make_tiling, grid_x), not by restating its constants.
std::vector<Shape> plan_shapes(bool quick);

// A few shapes per dtype on which every variant runs.
std::vector<Shape> matrix_shapes(bool quick);

}  // namespace cuda_emulation
}  // namespace vae_ext
