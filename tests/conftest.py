"""Shared fixtures, oracles and tolerances of the vae_ext test suite.

The oracles compute in float64 from the very values the op under test received (inputs
are drawn in float64 and rounded to the test dtype first), so the only error left is the
op's own: a tolerance per output dtype is enough.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_ext import _ops

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)

# (rtol, atol) for one value stored in `dtype` against a float64 oracle: about two roundings
# of the dtype (the compute type's error, then the cast to the output dtype).
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (4e-6, 4e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}

PRIOR_KINDS = ("standard", "scalar_float", "scalar_tensor", "per_latent", "per_latent_keepdim", "full")

needs_compiled = pytest.mark.skipif(_ops.compiled is None, reason="the compiled extension vae_ext._C is not built")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BACKEND_PARAMS = (pytest.param("compiled", marks=needs_compiled), pytest.param("fallback"))


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


def compute_dtype(dtype):
    """The dtype the kernels compute (and return the KL) in."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def op_set(name):
    return getattr(_ops, name)


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """An op set: ``_ops.compiled`` (torch.ops.vae_ext) or ``_ops.fallback``."""
    return op_set(request.param)


@pytest.fixture(params=BACKEND_PARAMS)
def api_backend(request, monkeypatch):
    """Routes the functional API (``vae_ext.reparameterize`` ...) through one op set."""
    ops = op_set(request.param)
    monkeypatch.setattr(_ops, "ops", ops)
    return ops


@pytest.fixture(params=DTYPES, ids=dtype_id)
def dtype(request):
    return request.param


# --------------------------------------------------------------------------- inputs


def generator(seed):
    return torch.Generator().manual_seed(seed)


def randn(shape, dtype, gen, scale=1.0, shift=0.0):
    """Normal values drawn in float64 and rounded to dtype."""
    return (torch.randn(shape, dtype=torch.float64, generator=gen) * scale + shift).to(dtype)


def latent(shape, dtype, seed=0, lv_scale=0.8):
    """(mu, logvar) of a typical encoder output."""
    gen = generator(seed)
    return randn(shape, dtype, gen), randn(shape, dtype, gen, scale=lv_scale, shift=-0.3)


def grad_like(t, seed=1):
    """A random upstream gradient (never all ones), float64-drawn, in t's dtype."""
    return randn(t.shape, t.dtype, generator(seed), shift=0.25)


def make_prior(kind, shape, dtype, seed=7):
    """(prior_mu, prior_logvar) of one kind for latents of `shape`: None, floats or tensors."""
    gen = generator(seed)
    latent_shape = tuple(shape[1:])
    if kind == "standard":
        return None, None
    if kind == "scalar_float":
        return 0.375, -0.625
    if kind == "scalar_tensor":
        return randn((), dtype, gen, 0.5), randn((), dtype, gen, 0.5)
    if kind == "per_latent":
        return randn(latent_shape, dtype, gen, 0.5), randn(latent_shape, dtype, gen, 0.5)
    if kind == "per_latent_keepdim":
        keep = (1,) + latent_shape
        return randn(keep, dtype, gen, 0.5), randn(keep, dtype, gen, 0.5)
    if kind == "full":
        return randn(shape, dtype, gen, 0.5), randn(shape, dtype, gen, 0.5)
    raise ValueError(kind)


def as_prior_tensor(p, like):
    """A prior argument as the ops take it: None or a tensor of like's dtype."""
    if p is None or isinstance(p, torch.Tensor):
        return p
    return torch.tensor(p, dtype=like.dtype)


def seed_tensor(value):
    return torch.tensor(value, dtype=torch.int64)


# --------------------------------------------------------------------------- oracles


def f64(t):
    """float64 copy of a tensor (or a Python float); None stays None."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return t.detach().double()
    return torch.tensor(float(t), dtype=torch.float64)


def batch_sum(t):
    """Sum over every non-batch dim: [B, ...] -> [B]."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:])).sum(dim=1)


def z_formula(mu, logvar, eps):
    return mu + eps * torch.exp(0.5 * logvar)


def kl_formula(mu, logvar, prior_mu=None, prior_logvar=None):
    """Per-sample KL from the textbook formula (docs/design.md section 2), in the inputs' dtype."""
    pmu = torch.zeros((), dtype=mu.dtype) if prior_mu is None else prior_mu
    plv = torch.zeros((), dtype=mu.dtype) if prior_logvar is None else prior_logvar
    d = mu - pmu
    elementwise = 0.5 * (plv - logvar + (torch.exp(logvar) + d * d) * torch.exp(-plv) - 1.0)
    return batch_sum(elementwise.expand(mu.shape))


def kl_distributions(mu, logvar, prior_mu=None, prior_logvar=None):
    """Per-sample KL from torch.distributions, in the inputs' dtype (differentiable)."""
    pmu = torch.zeros((), dtype=mu.dtype) if prior_mu is None else prior_mu
    plv = torch.zeros((), dtype=mu.dtype) if prior_logvar is None else prior_logvar
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(pmu.expand(mu.shape), torch.exp(0.5 * plv).expand(mu.shape))
    return batch_sum(kl_divergence(q, p))


def float64_grads(fn, tensors, grad_outputs):
    """Gradients of fn(*float64 leaves) against `tensors` (None entries are passed through)."""
    leaves = [None if t is None else f64(t).requires_grad_(True) for t in tensors]
    outputs = fn(*leaves)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    loss = sum((out * f64(g)).sum() for out, g in zip(outputs, grad_outputs) if g is not None)
    wanted = [leaf for leaf in leaves if leaf is not None]
    grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True, materialize_grads=True))
    return [None if leaf is None else next(grads) for leaf in leaves]


# --------------------------------------------------------------------------- comparisons


def assert_close(actual, expected, dtype, terms=1):
    """actual (an op output) matches a float64 oracle within dtype's tolerance.

    ``terms``: how many rounded values the output sums (a prior gradient summed over the
    batch, a KL summed over the latent); the absolute tolerance grows with it.
    """
    rtol, atol = TOLERANCES[dtype]
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * terms)


def assert_kl_close(kl, expected, input_dtype, latent_size):
    """The per-sample KL (compute dtype) matches the float64 oracle: a sum of latent_size terms."""
    dtype = compute_dtype(input_dtype)
    rtol, atol = TOLERANCES[dtype]
    assert kl.dtype == dtype, f"KL dtype {kl.dtype}, expected {dtype}"
    torch.testing.assert_close(kl.double(), expected.double(), rtol=rtol, atol=atol * math.sqrt(latent_size))
