// Autograd of every op, in C++ so a training step pays no Python per call.
//
// Forward ops: one torch::autograd::Function each way. Its backward calls the backward ops
// (dispatched per device) and saves no N-sized tensor beyond the inputs: a sampled ε is
// regenerated from the seed. Without a gradient to record, the kernels run directly.
//
// Backward ops: when a gradient of the backward itself is needed (create_graph=True, a
// gradient penalty, gradgradcheck, torch.func.hessian; or a forward-mode tangent), they run as a
// composition of ATen ops that autograd differentiates to any order; otherwise the fused kernel
// runs. The composition follows the same formulas (docs/design.md section 2, "Gradients");
// its values may differ from the fused kernel's in the last bits (ATen's exp instead of the
// package's own).
//
// torch.func cannot see through a C++ torch::autograd::Function: vae_ext/_ops.py routes the
// functional API to Python autograd.Functions under its transforms, and a direct op call
// under them raises a clear error here.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "op_calls.h"
#include "op_front.h"

namespace vae_ext {
namespace {

using at::Tensor;
using op_calls::Grads4;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

OptTensor present(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
Tensor value_or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }
bool requires_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }
bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }

template <class... Ts>
bool grad_needed(const Ts&... ts) {
  return c10::GradMode::is_enabled() && (requires_grad(ts) || ...);
}

// A forward-mode tangent (a dual tensor of torch.autograd.forward_ad, or torch.func.jvp's).
bool has_tangent(const Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }
bool has_tangent(const OptTensor& t) { return t.has_value() && has_tangent(*t); }

template <class... Ts>
bool tangent_given(const Ts&... ts) {
  return (has_tangent(ts) || ...);
}

// The forward ops have no forward-mode formula in C++; the functional API carries one
// (vae_ext/_ops.py) and routes torch.func transforms there.
void check_no_tangent(bool given, const char* op) {
  TORCH_CHECK(!given, "vae_ext::", op,
              ": forward-mode AD is supported through torch.func.jvp / jacfwd on the functional "
              "API (vae_ext.reparameterize, vae_ext.gaussian_kl, vae_ext.reparameterize_kl), "
              "not through dual tensors passed to torch.ops.vae_ext directly");
}

// A torch::autograd::Function cannot run under torch.func transforms: say what to use instead
// of torch's generic error.
void check_not_functorch(const char* op) {
  TORCH_CHECK(
      !c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode),
      "vae_ext::", op,
      ": torch.func transforms (grad, vjp, jacrev, jacfwd, vmap) are supported through the "
      "functional API (vae_ext.reparameterize, vae_ext.gaussian_kl, "
      "vae_ext.reparameterize_kl) and the modules, not through a direct torch.ops.vae_ext "
      "call that needs a gradient");
}

// d z / d eps = e^(logvar / 2); only when eps itself requires grad (rare).
Tensor eps_grad(const Tensor& grad_z, const Tensor& logvar) {
  return grad_z.mul(logvar.mul(0.5).exp());
}

Tensor prior_grad(const Tensor& full, const OptTensor& prior, bool wanted) {
  return wanted ? full.sum_to_size(prior->sizes()) : Tensor();
}

// ------------------------------------------------------------------------- forward ops

// reparameterize (eps given) and reparameterize_sampled (seed) share one Function.
struct Reparameterize : torch::autograd::Function<Reparameterize> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar,
                        const OptTensor& eps, const OptTensor& seed) {
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({logvar, value_or_undefined(eps), value_or_undefined(seed)});
    ctx->saved_data["mu"] = mu.requires_grad();
    ctx->saved_data["logvar"] = logvar.requires_grad();
    ctx->saved_data["eps"] = requires_grad(eps);
    at::AutoDispatchBelowADInplaceOrView guard;
    return eps.has_value() ? op_calls::reparameterize(mu, logvar, *eps)
                           : op_calls::reparameterize_sampled(mu, logvar, *seed);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor& grad_z = grads[0];
    if (!grad_z.defined()) return {Tensor(), Tensor(), Tensor(), Tensor()};
    const auto saved = ctx->get_saved_variables();
    const Tensor &logvar = saved[0], &eps = saved[1], &seed = saved[2];
    const Tensor g_lv =
        ctx->saved_data["logvar"].toBool()
            ? op_calls::reparameterize_backward(grad_z, logvar, present(eps), present(seed))
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
    ctx->saved_data["eps"] = requires_grad(eps);
    ctx->saved_data["prior_mu"] = requires_grad(prior_mu);
    ctx->saved_data["prior_logvar"] = requires_grad(prior_logvar);
    at::AutoDispatchBelowADInplaceOrView guard;
    if (!eps.has_value() && !seed.has_value()) {
      return {op_calls::gaussian_kl(mu, logvar, prior_mu, prior_logvar)};
    }
    const auto [z, kl] = op_calls::reparameterize_kl(mu, logvar, eps, seed, prior_mu, prior_logvar);
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
    const auto [g_mu, g_lv, g_pmu, g_plv] = op_calls::reparameterize_kl_backward(
        present(grad_z), present(grad_kl), mu, logvar, present(eps), present(seed), prior_mu,
        prior_logvar, want_pmu || want_plv);
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
  check_no_tangent(tangent_given(mu, logvar, eps), "reparameterize");
  if (!grad_needed(mu, logvar, eps)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return op_calls::reparameterize(mu, logvar, eps);
  }
  check_not_functorch("reparameterize");
  return Reparameterize::apply(mu, logvar, OptTensor(eps), OptTensor());
}

Tensor reparameterize_sampled(const Tensor& mu, const Tensor& logvar, const Tensor& seed) {
  check_no_tangent(tangent_given(mu, logvar), "reparameterize_sampled");
  if (!grad_needed(mu, logvar)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return op_calls::reparameterize_sampled(mu, logvar, seed);
  }
  check_not_functorch("reparameterize_sampled");
  return Reparameterize::apply(mu, logvar, OptTensor(), OptTensor(seed));
}

Tensor gaussian_kl(const Tensor& mu, const Tensor& logvar, const OptTensor& prior_mu,
                   const OptTensor& prior_logvar) {
  check_no_tangent(tangent_given(mu, logvar, prior_mu, prior_logvar), "gaussian_kl");
  if (!grad_needed(mu, logvar, prior_mu, prior_logvar)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return op_calls::gaussian_kl(mu, logvar, prior_mu, prior_logvar);
  }
  check_not_functorch("gaussian_kl");
  return ReparameterizeKl::apply(mu, logvar, OptTensor(), OptTensor(), prior_mu, prior_logvar)[0];
}

std::tuple<Tensor, Tensor> reparameterize_kl(const Tensor& mu, const Tensor& logvar,
                                             const OptTensor& eps, const OptTensor& seed,
                                             const OptTensor& prior_mu,
                                             const OptTensor& prior_logvar) {
  check_no_tangent(tangent_given(mu, logvar, eps, prior_mu, prior_logvar), "reparameterize_kl");
  if (!grad_needed(mu, logvar, eps, prior_mu, prior_logvar)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return op_calls::reparameterize_kl(mu, logvar, eps, seed, prior_mu, prior_logvar);
  }
  check_not_functorch("reparameterize_kl");
  TORCH_CHECK_VALUE(eps.has_value() != seed.has_value(),
                    "reparameterize_kl: pass exactly one of eps and seed");
  const auto out = ReparameterizeKl::apply(mu, logvar, eps, seed, prior_mu, prior_logvar);
  return {out[0], out[1]};
}

// ------------------------------------------------------------------------- backward ops

// ε in the compute dtype: the given one, or the seed's, regenerated by the sampling op at
// mu = logvar = 0 (z = 0 + ε e^0 = ε exactly; the flat index, hence ε, depends only on shape).
Tensor eps_in(at::ScalarType compute, const Tensor& like, const OptTensor& eps,
              const OptTensor& seed) {
  if (eps.has_value()) return eps->to(compute);
  const Tensor zeros = at::zeros(like.sizes(), like.options().dtype(compute));
  return op_calls::reparameterize_sampled(zeros, zeros, *seed);
}

// The kernels' argument checks (op_front.h), so both paths reject the same calls.
void check_backward_inputs(const OptTensor& grad_z, const OptTensor& grad_kl, const Tensor& mu,
                           const Tensor& logvar, const OptTensor& eps, const OptTensor& seed,
                           const OptTensor& prior_mu, const OptTensor& prior_logvar,
                           const char* op) {
  const bool sample = grad_z.has_value() && grad_z->defined();
  check_inputs(mu, logvar, value_or_undefined(eps), value_or_undefined(seed), sample, op);
  if (sample) check_like_mu(*grad_z, "grad_z", mu, op);
  if (grad_kl.has_value() && grad_kl->defined()) {
    TORCH_CHECK_VALUE(grad_kl->dim() == 1 && grad_kl->size(0) == mu.size(0), op,
                      ": grad_kl must have shape [", mu.size(0), "], got ", grad_kl->sizes());
  }
  checked_prior(prior_mu, "prior_mu", mu, op);
  checked_prior(prior_logvar, "prior_logvar", mu, op);
}

// The differentiable compositions of the backward ops (see the top of this file).
Tensor reparameterize_backward_composite(const Tensor& grad_z, const Tensor& logvar,
                                         const OptTensor& eps, const OptTensor& seed) {
  const auto compute = compute_dtype(logvar);
  const Tensor e = eps_in(compute, logvar, eps, seed);
  const Tensor sigma = logvar.to(compute).mul(0.5).exp();
  return grad_z.to(compute).mul(e.mul(0.5).mul(sigma)).to(logvar.scalar_type());
}

Grads4 kl_backward_composite(const OptTensor& grad_z, const OptTensor& grad_kl, const Tensor& mu,
                             const Tensor& logvar, const OptTensor& eps, const OptTensor& seed,
                             const OptTensor& prior_mu, const OptTensor& prior_logvar,
                             bool prior_grads) {
  const auto dtype = mu.scalar_type();
  const auto compute = compute_dtype(mu);
  const Tensor m = mu.to(compute), lv = logvar.to(compute);
  Tensor g_mu = at::zeros_like(m), g_lv = at::zeros_like(m);
  Tensor k_mu = at::zeros_like(m), g_plv = at::zeros_like(m);
  if (grad_z.has_value() && grad_z->defined()) {
    const Tensor gz = grad_z->to(compute);
    const Tensor e = eps_in(compute, mu, eps, seed);
    g_mu = g_mu.add(gz);
    g_lv = g_lv.add(gz.mul(e.mul(0.5).mul(lv.mul(0.5).exp())));
  }
  if (grad_kl.has_value() && grad_kl->defined()) {
    std::vector<int64_t> column(mu.dim(), 1);
    column[0] = mu.size(0);
    const Tensor g = grad_kl->to(compute).reshape(column);
    const Tensor zero = at::zeros({}, m.options());
    const Tensor pm = prior_mu.has_value() ? prior_mu->to(compute) : zero;
    const Tensor plv = prior_logvar.has_value() ? prior_logvar->to(compute) : zero;
    const Tensor d = m.sub(pm);
    const Tensor inv_var_p = plv.neg().exp();
    const Tensor em1 = lv.sub(plv).expm1();
    k_mu = g.mul(d).mul(inv_var_p);
    g_mu = g_mu.add(k_mu);
    g_lv = g_lv.add(g.mul(0.5).mul(em1));
    g_plv = g.mul(-0.5).mul(em1.add(d.mul(d).mul(inv_var_p)));
  }
  const auto out = [&](const Tensor& t) { return t.expand(mu.sizes()).to(dtype).contiguous(); };
  if (!prior_grads) {
    return {out(g_mu), out(g_lv), at::empty({0}, mu.options()), at::empty({0}, mu.options())};
  }
  return {out(g_mu), out(g_lv), out(k_mu.neg()), out(g_plv)};
}

Tensor reparameterize_backward(const Tensor& grad_z, const Tensor& logvar, const OptTensor& eps,
                               const OptTensor& seed) {
  if (grad_needed(grad_z, logvar, eps) || tangent_given(grad_z, logvar, eps)) {
    check_backward_inputs(grad_z, {}, logvar, logvar, eps, seed, {}, {}, "reparameterize_backward");
    return reparameterize_backward_composite(grad_z, logvar, eps, seed);
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  return op_calls::reparameterize_backward(grad_z, logvar, eps, seed);
}

Grads4 reparameterize_kl_backward(const OptTensor& grad_z, const OptTensor& grad_kl,
                                  const Tensor& mu, const Tensor& logvar, const OptTensor& eps,
                                  const OptTensor& seed, const OptTensor& prior_mu,
                                  const OptTensor& prior_logvar, bool prior_grads) {
  if (grad_needed(grad_z, grad_kl, mu, logvar, eps, prior_mu, prior_logvar) ||
      tangent_given(grad_z, grad_kl, mu, logvar, eps, prior_mu, prior_logvar)) {
    check_backward_inputs(grad_z, grad_kl, mu, logvar, eps, seed, prior_mu, prior_logvar,
                          "reparameterize_kl_backward");
    return kl_backward_composite(grad_z, grad_kl, mu, logvar, eps, seed, prior_mu, prior_logvar,
                                 prior_grads);
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  return op_calls::reparameterize_kl_backward(grad_z, grad_kl, mu, logvar, eps, seed, prior_mu,
                                              prior_logvar, prior_grads);
}

}  // namespace
}  // namespace vae_ext

TORCH_LIBRARY_IMPL(vae_ext, Autograd, m) {
  m.impl("reparameterize", &vae_ext::reparameterize);
  m.impl("reparameterize_sampled", &vae_ext::reparameterize_sampled);
  m.impl("gaussian_kl", &vae_ext::gaussian_kl);
  m.impl("reparameterize_kl", &vae_ext::reparameterize_kl);
  m.impl("reparameterize_backward", &vae_ext::reparameterize_backward);
  m.impl("reparameterize_kl_backward", &vae_ext::reparameterize_kl_backward);
}
