// Autograd for the four forward ops, in C++ so a training step pays no Python per call.
// Each backward calls the matching backward op (itself dispatched per device) and saves
// no N-sized tensor beyond the inputs: a sampled ε is regenerated from the seed.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace vae_ext {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;

template <class Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

OptTensor present(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
Tensor value_or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }
bool wants_grad(const OptTensor& t) { return t.has_value() && t->defined() && t->requires_grad(); }

Tensor reparameterize_backward_op(const Tensor& grad_z, const Tensor& logvar, const OptTensor& eps,
                                  const OptTensor& seed) {
  static const auto op =
      find_op<Tensor(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&)>(
          "vae_ext::reparameterize_backward");
  return op.call(grad_z, logvar, eps, seed);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> kl_backward_op(
    const OptTensor& grad_z, const OptTensor& grad_kl, const Tensor& mu, const Tensor& logvar,
    const OptTensor& eps, const OptTensor& seed, const OptTensor& prior_mu,
    const OptTensor& prior_logvar, bool prior_grads) {
  static const auto op = find_op<std::tuple<Tensor, Tensor, Tensor, Tensor>(
      const OptTensor&, const OptTensor&, const Tensor&, const Tensor&, const OptTensor&,
      const OptTensor&, const OptTensor&, const OptTensor&, bool)>(
      "vae_ext::reparameterize_kl_backward");
  return op.call(grad_z, grad_kl, mu, logvar, eps, seed, prior_mu, prior_logvar, prior_grads);
}

// d z / d eps = e^(logvar / 2); only when eps itself requires grad (rare).
Tensor eps_grad(const Tensor& grad_z, const Tensor& logvar) {
  return grad_z.mul(logvar.mul(0.5).exp());
}

Tensor prior_grad(const Tensor& full, const OptTensor& prior, bool wanted) {
  return wanted ? full.sum_to_size(prior->sizes()) : Tensor();
}

// reparameterize (eps given) and reparameterize_sampled (seed) share one Function.
struct Reparameterize : torch::autograd::Function<Reparameterize> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar,
                        const OptTensor& eps, const OptTensor& seed) {
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({logvar, value_or_undefined(eps), value_or_undefined(seed)});
    ctx->saved_data["mu"] = mu.requires_grad();
    ctx->saved_data["logvar"] = logvar.requires_grad();
    ctx->saved_data["eps"] = wants_grad(eps);
    at::AutoDispatchBelowADInplaceOrView guard;
    if (eps.has_value()) {
      static const auto op =
          find_op<Tensor(const Tensor&, const Tensor&, const Tensor&)>("vae_ext::reparameterize");
      return op.call(mu, logvar, *eps);
    }
    static const auto op = find_op<Tensor(const Tensor&, const Tensor&, const Tensor&)>(
        "vae_ext::reparameterize_sampled");
    return op.call(mu, logvar, *seed);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor& grad_z = grads[0];
    if (!grad_z.defined()) return {Tensor(), Tensor(), Tensor(), Tensor()};
    const auto saved = ctx->get_saved_variables();
    const Tensor &logvar = saved[0], &eps = saved[1], &seed = saved[2];
    const Tensor g_lv =
        ctx->saved_data["logvar"].toBool()
            ? reparameterize_backward_op(grad_z, logvar, present(eps), present(seed))
            : Tensor();
    return {ctx->saved_data["mu"].toBool() ? grad_z : Tensor(), g_lv,
            ctx->saved_data["eps"].toBool() ? eps_grad(grad_z, logvar) : Tensor(), Tensor()};
  }
};

// reparameterize_kl (z and kl) and gaussian_kl (kl only: eps and seed absent).
struct ReparameterizeKl : torch::autograd::Function<ReparameterizeKl> {
  static variable_list forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar,
                               const OptTensor& eps, const OptTensor& seed,
                               const OptTensor& prior_mu, const OptTensor& prior_logvar) {
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({mu, logvar, value_or_undefined(eps), value_or_undefined(seed),
                            value_or_undefined(prior_mu), value_or_undefined(prior_logvar)});
    ctx->saved_data["mu"] = mu.requires_grad();
    ctx->saved_data["logvar"] = logvar.requires_grad();
    ctx->saved_data["eps"] = wants_grad(eps);
    ctx->saved_data["prior_mu"] = wants_grad(prior_mu);
    ctx->saved_data["prior_logvar"] = wants_grad(prior_logvar);
    at::AutoDispatchBelowADInplaceOrView guard;
    if (!eps.has_value() && !seed.has_value()) {
      static const auto op =
          find_op<Tensor(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&)>(
              "vae_ext::gaussian_kl");
      return {op.call(mu, logvar, prior_mu, prior_logvar)};
    }
    static const auto op =
        find_op<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const OptTensor&,
                                           const OptTensor&, const OptTensor&, const OptTensor&)>(
            "vae_ext::reparameterize_kl");
    const auto [z, kl] = op.call(mu, logvar, eps, seed, prior_mu, prior_logvar);
    return {z, kl};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &mu = saved[0], &logvar = saved[1], &eps = saved[2], &seed = saved[3];
    const OptTensor prior_mu = present(saved[4]), prior_logvar = present(saved[5]);
    const bool sampled_z = grads.size() == 2;
    const Tensor grad_z = sampled_z ? grads[0] : Tensor();
    const Tensor grad_kl = grads.back();
    const bool want_pmu = ctx->saved_data["prior_mu"].toBool();
    const bool want_plv = ctx->saved_data["prior_logvar"].toBool();
    const auto [g_mu, g_lv, g_pmu, g_plv] =
        kl_backward_op(present(grad_z), present(grad_kl), mu, logvar, present(eps), present(seed),
                       prior_mu, prior_logvar, want_pmu || want_plv);
    Tensor g_eps;
    if (ctx->saved_data["eps"].toBool()) {
      g_eps = grad_z.defined() ? eps_grad(grad_z, logvar) : at::zeros_like(eps);
    }
    return {ctx->saved_data["mu"].toBool() ? g_mu : Tensor(),
            ctx->saved_data["logvar"].toBool() ? g_lv : Tensor(),
            g_eps,
            Tensor(),
            prior_grad(g_pmu, prior_mu, want_pmu),
            prior_grad(g_plv, prior_logvar, want_plv)};
  }
};

Tensor reparameterize(const Tensor& mu, const Tensor& logvar, const Tensor& eps) {
  return Reparameterize::apply(mu, logvar, OptTensor(eps), OptTensor());
}

Tensor reparameterize_sampled(const Tensor& mu, const Tensor& logvar, const Tensor& seed) {
  return Reparameterize::apply(mu, logvar, OptTensor(), OptTensor(seed));
}

Tensor gaussian_kl(const Tensor& mu, const Tensor& logvar, const OptTensor& prior_mu,
                   const OptTensor& prior_logvar) {
  return ReparameterizeKl::apply(mu, logvar, OptTensor(), OptTensor(), prior_mu, prior_logvar)[0];
}

std::tuple<Tensor, Tensor> reparameterize_kl(const Tensor& mu, const Tensor& logvar,
                                             const OptTensor& eps, const OptTensor& seed,
                                             const OptTensor& prior_mu,
                                             const OptTensor& prior_logvar) {
  // Both given is refused by the op itself (op_front.h check_inputs), as on every path.
  TORCH_CHECK_VALUE(eps.has_value() || seed.has_value(),
                    "reparameterize_kl: pass exactly one of eps and seed");
  const auto out = ReparameterizeKl::apply(mu, logvar, eps, seed, prior_mu, prior_logvar);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace vae_ext

TORCH_LIBRARY_IMPL(vae_ext, Autograd, m) {
  m.impl("reparameterize", &vae_ext::reparameterize);
  m.impl("reparameterize_sampled", &vae_ext::reparameterize_sampled);
  m.impl("gaussian_kl", &vae_ext::gaussian_kl);
  m.impl("reparameterize_kl", &vae_ext::reparameterize_kl);
}
