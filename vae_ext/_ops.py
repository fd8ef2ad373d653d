"""Loads the compiled ops and registers their fake kernels, batching rules and fallbacks.

Op sets with the same names and signatures come out of this module:

* ``compiled``: ``torch.ops.vae_ext`` (csrc/; autograd in csrc/autograd.cpp, batching rules
  in _batching.py);
* ``fallback``: the pure-PyTorch reference behind Python autograd.Functions, used when the
  extension is missing or ``VAE_EXT_FORCE_FALLBACK=1``;
* ``compiled_for_functorch`` and ``fallback_for_functorch``: the two behind autograd.Functions
  with forward-mode rules, for calls under torch.func transforms.

``ops`` is the set the functional API calls (through ``active()``).
"""

from __future__ import annotations

import os
import types
import warnings

import torch

from . import _batching, reference
from ._numerics import compute_dtype

try:
    from . import _C
except ImportError as error:  # no compiler at install time, or VAE_EXT_NO_EXT=1
    _C = None
    _import_error = error
else:
    _import_error = None

OP_NAMES = (
    "reparameterize",
    "reparameterize_sampled",
    "reparameterize_backward",
    "gaussian_kl",
    "reparameterize_kl",
    "reparameterize_kl_backward",
)
FORCE_FALLBACK = os.environ.get("VAE_EXT_FORCE_FALLBACK", "0").lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- autograd
# Python autograd.Functions over an op set ``impl``: the fallback's autograd (impl = the
# reference), and the compiled ops' under torch.func transforms, which cannot see through a
# C++ autograd Function (impl = torch.ops.vae_ext; their backward ops are differentiable).
# The same rules as csrc/autograd.cpp, with forward-mode (jvp) and generated vmap rules.


def _sum_to_prior(grad, prior, needed):
    return grad.sum_to_size(prior.shape) if needed else None


def _eps_grad(ctx, grad_z, logvar, index):
    if grad_z is None or not ctx.needs_input_grad[index]:
        return None
    return grad_z * torch.exp(0.5 * logvar)


def _save_inputs(ctx, inputs, output):
    tensors = [t if isinstance(t, torch.Tensor) else None for t in inputs]
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


def _add(total, term):
    if term is None:
        return total
    return term if total is None else total + term


def _make_autograd(impl):
    def z_tangent(mu, logvar, eps, seed, t_mu, t_lv, t_eps):
        t_z = t_mu
        if t_lv is not None:
            t_z = _add(t_z, impl.reparameterize_backward(t_lv, logvar, eps, seed))
        if t_eps is not None:
            t_z = _add(t_z, t_eps * torch.exp(0.5 * logvar))
        return torch.zeros_like(mu) if t_z is None else t_z

    def kl_tangent(mu, logvar, prior_mu, prior_logvar, t_mu, t_lv, t_pmu, t_plv):
        ones = torch.ones(mu.shape[0], dtype=compute_dtype(mu.dtype), device=mu.device)
        partials = impl.reparameterize_kl_backward(
            None, ones, mu, logvar, None, None, prior_mu, prior_logvar, t_pmu is not None or t_plv is not None
        )
        total = None
        for partial, tangent in zip(partials, (t_mu, t_lv, t_pmu, t_plv)):
            if tangent is not None:
                total = _add(total, partial.to(ones.dtype) * tangent.to(ones.dtype))
        if total is None:
            return ones.new_zeros(mu.shape[0])
        return total.expand(mu.shape).reshape(mu.shape[0], -1).sum(dim=1)

    def reparameterize_backward(ctx, grad_z):
        mu, logvar, eps = ctx.saved_tensors
        g_lv = impl.reparameterize_backward(grad_z, logvar, eps, None) if ctx.needs_input_grad[1] else None
        return grad_z, g_lv, _eps_grad(ctx, grad_z, logvar, 2)

    def reparameterize_jvp(ctx, t_mu, t_lv, t_eps):
        mu, logvar, eps = ctx.saved_tensors
        return z_tangent(mu, logvar, eps, None, t_mu, t_lv, t_eps)

    def sampled_backward(ctx, grad_z):
        mu, logvar, seed = ctx.saved_tensors
        g_lv = impl.reparameterize_backward(grad_z, logvar, None, seed) if ctx.needs_input_grad[1] else None
        return grad_z, g_lv, None

    def sampled_jvp(ctx, t_mu, t_lv, t_seed):
        mu, logvar, seed = ctx.saved_tensors
        return z_tangent(mu, logvar, None, seed, t_mu, t_lv, None)

    def kl_backward(ctx, grad_kl):
        mu, logvar, prior_mu, prior_logvar = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_mu, g_lv, g_pmu, g_plv = impl.reparameterize_kl_backward(
            None, grad_kl, mu, logvar, None, None, prior_mu, prior_logvar, need[2] or need[3]
        )
        return (
            g_mu if need[0] else None,
            g_lv if need[1] else None,
            _sum_to_prior(g_pmu, prior_mu, need[2]),
            _sum_to_prior(g_plv, prior_logvar, need[3]),
        )

    def kl_jvp(ctx, t_mu, t_lv, t_pmu, t_plv):
        mu, logvar, prior_mu, prior_logvar = ctx.saved_tensors
        return kl_tangent(mu, logvar, prior_mu, prior_logvar, t_mu, t_lv, t_pmu, t_plv)

    def fused_backward(ctx, grad_z, grad_kl):
        mu, logvar, eps, seed, prior_mu, prior_logvar = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_mu, g_lv, g_pmu, g_plv = impl.reparameterize_kl_backward(
            grad_z, grad_kl, mu, logvar, eps, seed, prior_mu, prior_logvar, need[4] or need[5]
        )
        return (
            g_mu if need[0] else None,
            g_lv if need[1] else None,
            _eps_grad(ctx, grad_z, logvar, 2),
            None,
            _sum_to_prior(g_pmu, prior_mu, need[4]),
            _sum_to_prior(g_plv, prior_logvar, need[5]),
        )

    def fused_jvp(ctx, t_mu, t_lv, t_eps, t_seed, t_pmu, t_plv):
        mu, logvar, eps, seed, prior_mu, prior_logvar = ctx.saved_tensors
        return (
            z_tangent(mu, logvar, eps, seed, t_mu, t_lv, t_eps),
            kl_tangent(mu, logvar, prior_mu, prior_logvar, t_mu, t_lv, t_pmu, t_plv),
        )

    return {
        "reparameterize": (reparameterize_backward, reparameterize_jvp),
        "reparameterize_sampled": (sampled_backward, sampled_jvp),
        "gaussian_kl": (kl_backward, kl_jvp),
        "reparameterize_kl": (fused_backward, fused_jvp),
    }


def _autograd_functions(impl, prefix, forward_mode):
    """An op set whose forward ops are autograd.Functions over ``impl`` (its backward ops as is).

    ``forward_mode`` adds the jvp rules (torch.func.jvp, jacfwd), which Dynamo cannot trace.
    """
    namespace = types.SimpleNamespace(
        reparameterize_backward=impl.reparameterize_backward,
        reparameterize_kl_backward=impl.reparameterize_kl_backward,
    )
    for name, (backward, jvp) in _make_autograd(impl).items():
        function = type(
            f"{prefix}_{name}",
            (torch.autograd.Function,),
            {
                "forward": staticmethod(getattr(impl, name)),
                "setup_context": staticmethod(_save_inputs),
                "backward": staticmethod(backward),
                **({"jvp": staticmethod(jvp)} if forward_mode else {}),
                # vmap runs forward, backward and jvp batched: the compiled ops' batching rules
                # (_batching.py), or the reference's plain tensor code.
                "generate_vmap_rule": True,
            },
        )
        setattr(namespace, name, function.apply)
    return namespace


# --------------------------------------------------------------------------- fake kernels


def _fake_reparameterize(mu, logvar, eps):
    reference.check_inputs("reparameterize", mu, logvar, eps=eps)
    return torch.empty_like(mu, memory_format=torch.contiguous_format)


def _fake_reparameterize_sampled(mu, logvar, seed):
    reference.check_inputs("reparameterize_sampled", mu, logvar, seed=seed)
    return torch.empty_like(mu, memory_format=torch.contiguous_format)


def _fake_reparameterize_backward(grad_z, logvar, eps, seed):
    reference.check_inputs("reparameterize_backward", logvar, logvar, eps=eps, seed=seed, needs_sample=True)
    return torch.empty_like(logvar, memory_format=torch.contiguous_format)


def _fake_gaussian_kl(mu, logvar, prior_mu, prior_logvar):
    reference.check_inputs("gaussian_kl", mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar)
    return mu.new_empty((mu.shape[0],), dtype=compute_dtype(mu.dtype))


def _fake_reparameterize_kl(mu, logvar, eps, seed, prior_mu, prior_logvar):
    reference.check_inputs("reparameterize_kl", mu, logvar, eps, seed, prior_mu, prior_logvar, needs_sample=True)
    z = torch.empty_like(mu, memory_format=torch.contiguous_format)
    return z, mu.new_empty((mu.shape[0],), dtype=compute_dtype(mu.dtype))


def _fake_reparameterize_kl_backward(grad_z, grad_kl, mu, logvar, eps, seed, prior_mu, prior_logvar, prior_grads):
    op = "reparameterize_kl_backward"
    reference.check_inputs(op, mu, logvar, eps, seed, prior_mu, prior_logvar, needs_sample=grad_z is not None)
    prior_shape = mu.shape if prior_grads else (0,)
    like = torch.contiguous_format
    return (
        torch.empty_like(mu, memory_format=like),
        torch.empty_like(mu, memory_format=like),
        mu.new_empty(prior_shape),
        mu.new_empty(prior_shape),
    )


_FAKES = {
    "reparameterize": _fake_reparameterize,
    "reparameterize_sampled": _fake_reparameterize_sampled,
    "reparameterize_backward": _fake_reparameterize_backward,
    "gaussian_kl": _fake_gaussian_kl,
    "reparameterize_kl": _fake_reparameterize_kl,
    "reparameterize_kl_backward": _fake_reparameterize_kl_backward,
}


# --------------------------------------------------------------------------- op sets


def _register_compiled():
    # Autograd of the compiled ops is registered in C++ (csrc/autograd.cpp): no Python per call.
    for name, fake in _FAKES.items():
        torch.library.register_fake(f"vae_ext::{name}", fake)
    # Devices the build has no kernels for run the reference, through the same op.
    for name in OP_NAMES:
        for key in ("CPU", "CUDA"):
            if not torch._C._dispatch_has_kernel_for_dispatch_key(f"vae_ext::{name}", key):
                torch.library.impl(f"vae_ext::{name}", key.lower(), getattr(reference, name))
    _batching.register()
    return torch.ops.vae_ext


compiled = _register_compiled() if _C is not None else None
compiled_for_functorch = _autograd_functions(compiled, "Compiled", True) if compiled is not None else None
fallback = _autograd_functions(reference, "Fallback", False)
fallback_for_functorch = _autograd_functions(reference, "FallbackForFunctorch", True)

if compiled is None and not FORCE_FALLBACK:
    from ._build_hint import missing_kernels_message

    warnings.warn(missing_kernels_message(_import_error), RuntimeWarning, stacklevel=2)

ops = fallback if (FORCE_FALLBACK or compiled is None) else compiled


def active():
    """The op set for this call: ``ops``, or under torch.func transforms its variant with
    Python autograd.Functions that carry jvp rules (a C++ autograd Function cannot run there)."""
    if torch._C._are_functorch_transforms_active():
        return compiled_for_functorch if ops is compiled else fallback_for_functorch
    return ops
