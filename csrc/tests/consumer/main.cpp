// The program of docs/cpp.md: calls vae_ext's ops through torch's dispatcher, with the typed
// calls of <vae_ext/op_calls.h>. ctest's install.consumer builds it against an installed
// vae_ext; it exits 0 when the ops agree with the same formulas written with ATen ops.
#include <ATen/ATen.h>
#include <vae_ext/op_calls.h>  // typed dispatcher calls of the ops
#include <vae_ext/philox.h>

#include <iostream>

int main() {
  using vae_ext::op_calls::gaussian_kl;
  using vae_ext::op_calls::reparameterize_kl;
  const auto halves = at::randn({8, 32}).chunk(2, /*dim=*/1);  // encoder output [mu | logvar]
  const at::Tensor mu = halves[0], logvar = halves[1];
  const at::Tensor kl = gaussian_kl(mu, logvar);  // [8], KL(q || N(0, I)) per sample
  const at::Tensor seed = at::full({1}, 1234, at::kLong);
  const auto [z, kl_again] =
      reparameterize_kl(mu, logvar, /*eps=*/std::nullopt, seed);  // z = mu + eps * sigma

  // The same with ATen ops; eps of element i is normal_at(philox_key(seed), i).
  const at::Tensor eager_kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1);
  at::Tensor eps = at::empty_like(mu, at::MemoryFormat::Contiguous);
  for (int64_t i = 0; i < eps.numel(); ++i) {
    eps.view(-1)[i] = vae_ext::normal_at(vae_ext::philox_key(1234), static_cast<uint64_t>(i));
  }
  const at::Tensor eager_z = mu + eps * (0.5 * logvar).exp();

  const bool ok = at::allclose(kl, eager_kl, 1e-5, 1e-5) &&
                  at::allclose(kl_again, kl, 1e-6, 1e-6) && at::allclose(z, eager_z, 1e-5, 1e-6);
  std::cout << "per-sample KL: " << kl << "\n" << (ok ? "vae_ext consumer OK" : "MISMATCH") << "\n";
  return ok ? 0 : 1;
}
