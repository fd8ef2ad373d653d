"""Loads the compiled ops and registers their fake kernels, autograd and fallback kernels.

Two op sets with the same names and signatures come out of this module:

* ``compiled``: ``torch.ops.vae_ext`` (csrc/; its autograd is in csrc/autograd.cpp);
* ``fallback``: the pure-PyTorch reference wrapped in ``torch.autograd.Function`` with the
  autograd below (the same rules as the C++ one), used when the extension is missing or
  ``VAE_EXT_FORCE_FALLBACK=1``.

``ops`` is the set the functional API calls.
"""

from __future__ import annotations

import os
import types
import warnings

import torch

from . import reference

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
# The fallback's (torch.autograd.Function); ``impl`` is the op set whose backward ops are called.


def _sum_to_prior(grad, prior, needed):
    return grad.sum_to_size(prior.shape) if needed else None


def _eps_grad(ctx, grad_z, logvar, index):
    if grad_z is None or not ctx.needs_input_grad[index]:
        return None
    return grad_z * torch.exp(0.5 * logvar)


def _make_autograd(impl):
    def reparameterize_setup(ctx, inputs, output):
        _, logvar, eps = inputs
        ctx.save_for_backward(logvar, eps)

    def reparameterize_backward(ctx, grad_z):
        logvar, eps = ctx.saved_tensors
        g_lv = impl.reparameterize_backward(grad_z, logvar, eps, None) if ctx.needs_input_grad[1] else None
        return grad_z, g_lv, _eps_grad(ctx, grad_z, logvar, 2)

    def sampled_setup(ctx, inputs, output):
        _, logvar, seed = inputs
        ctx.save_for_backward(logvar, seed)

    def sampled_backward(ctx, grad_z):
        logvar, seed = ctx.saved_tensors
        g_lv = impl.reparameterize_backward(grad_z, logvar, None, seed) if ctx.needs_input_grad[1] else None
        return grad_z, g_lv, None

    def kl_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

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

    def fused_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

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

    return {
        "reparameterize": (reparameterize_setup, reparameterize_backward),
        "reparameterize_sampled": (sampled_setup, sampled_backward),
        "gaussian_kl": (kl_setup, kl_backward),
        "reparameterize_kl": (fused_setup, fused_backward),
    }


# --------------------------------------------------------------------------- fake kernels


def _opmath(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


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
    return mu.new_empty((mu.shape[0],), dtype=_opmath(mu.dtype))


def _fake_reparameterize_kl(mu, logvar, eps, seed, prior_mu, prior_logvar):
    reference.check_inputs("reparameterize_kl", mu, logvar, eps, seed, prior_mu, prior_logvar, needs_sample=True)
    z = torch.empty_like(mu, memory_format=torch.contiguous_format)
    return z, mu.new_empty((mu.shape[0],), dtype=_opmath(mu.dtype))


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
    return torch.ops.vae_ext


def _make_fallback():
    namespace = types.SimpleNamespace(
        reparameterize_backward=reference.reparameterize_backward,
        reparameterize_kl_backward=reference.reparameterize_kl_backward,
    )
    # The backward functions close over the reference module itself, which dynamo can trace.
    autograd = _make_autograd(reference)
    for name, (setup, backward) in autograd.items():
        function = type(
            f"Fallback_{name}",
            (torch.autograd.Function,),
            {
                "forward": staticmethod(getattr(reference, name)),
                "setup_context": staticmethod(setup),
                "backward": staticmethod(backward),
            },
        )
        setattr(namespace, name, function.apply)
    return namespace


compiled = _register_compiled() if _C is not None else None
fallback = _make_fallback()

if compiled is None and not FORCE_FALLBACK:
    warnings.warn(
        f"vae_ext: compiled kernels unavailable ({_import_error}); using the pure-PyTorch fallback",
        RuntimeWarning,
        stacklevel=2,
    )

ops = fallback if (FORCE_FALLBACK or compiled is None) else compiled
