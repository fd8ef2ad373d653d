// Calls vae_ext's ops through torch's dispatcher (docs/cpp.md). Exits 0 when the fused
// per-sample KL agrees with the same formula written with ATen ops.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <vae_ext/philox.h>

#include <iostream>
#include <optional>
#include <tuple>

int main() {
  using OptTensor = std::optional<at::Tensor>;
  // Look the op up once; typed<>() checks the signature against the registered schema.
  static const auto gaussian_kl =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("vae_ext::gaussian_kl", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                            const OptTensor&)>();
  static const auto reparameterize_kl =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("vae_ext::reparameterize_kl", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const OptTensor&, const OptTensor&,
                                                    const OptTensor&, const OptTensor&)>();

  const at::Tensor h = at::randn({8, 32});  // an encoder's output: [mu | logvar]
  const auto halves = h.chunk(2, /*dim=*/1);
  const at::Tensor mu = halves[0], logvar = halves[1];

  // Per-sample KL(q || N(0, I)), shape [8].
  const at::Tensor kl = gaussian_kl.call(mu, logvar, std::nullopt, std::nullopt);
  const at::Tensor eager = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1);

  // z = mu + eps * sigma with eps drawn in the kernel from a seed (int64, one element).
  const at::Tensor seed = at::full({1}, 1234, at::kLong);
  const auto [z, kl2] = reparameterize_kl.call(mu, logvar, std::nullopt, seed, std::nullopt,
                                               std::nullopt);
  // The kernel's eps for element i is vae_ext::normal_at(philox_key(seed), i).
  const float eps0 = vae_ext::normal_at(vae_ext::philox_key(1234), 0);
  const float z0 = mu[0][0].item<float>() + eps0 * (0.5 * logvar[0][0]).exp().item<float>();

  const bool ok = at::allclose(kl, eager, 1e-5, 1e-5) && at::allclose(kl, kl2, 1e-6, 1e-6) &&
                  std::abs(z[0][0].item<float>() - z0) <= 1e-5f * (1 + std::abs(z0));
  std::cout << "kl = " << kl << "\n" << (ok ? "vae_ext consumer OK" : "MISMATCH") << "\n";
  return ok ? 0 : 1;
}
