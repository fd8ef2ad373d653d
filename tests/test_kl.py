"""gaussian_kl: values and gradients against float64 formulas and torch.distributions, on every
device (the `backend` / `api_backend` fixtures, tests/conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    PRIOR_KINDS,
    as_prior_tensor,
    assert_close,
    assert_kl_close,
    compute_dtype,
    f64,
    float64_grads,
    grad_like,
    kl_distributions,
    kl_formula,
    latent,
    make_prior,
    randn,
)

import vae_ext

ON_EVERY_DEVICE = True
SHAPES = ((5, 7), (3, 2, 3, 4))


def prior_terms(prior, shape):
    """How many per-element gradients the gradient of this prior sums (1 for a full prior)."""
    return math.prod(shape) // max(prior.numel(), 1)


@pytest.mark.parametrize("kind", PRIOR_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kl_values(api_backend, dtype, kind, shape):
    device = api_backend.device
    mu, logvar = latent(shape, dtype, device=device)
    prior_mu, prior_logvar = make_prior(kind, shape, dtype, device=device)
    kl = vae_ext.gaussian_kl(mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar, reduction="none")
    args = (f64(mu), f64(logvar), f64(prior_mu), f64(prior_logvar))
    latent_size = math.prod(shape[1:])
    assert kl.shape == (shape[0],)
    assert_kl_close(kl, kl_formula(*args), dtype, latent_size)
    assert_kl_close(kl, kl_distributions(*args), dtype, latent_size)


@pytest.mark.parametrize("kind", PRIOR_KINDS)
def test_kl_op_takes_tensor_priors(backend, kind):
    device = backend.device
    mu, logvar = latent((4, 6), torch.float64, device=device)
    prior_mu, prior_logvar = (as_prior_tensor(p, mu) for p in make_prior(kind, (4, 6), torch.float64, device=device))
    kl = backend.gaussian_kl(mu, logvar, prior_mu, prior_logvar)
    assert_kl_close(kl, kl_formula(f64(mu), f64(logvar), f64(prior_mu), f64(prior_logvar)), torch.float64, 6)


@pytest.mark.parametrize("which", ("prior_mu", "prior_logvar"))
def test_kl_with_only_one_prior_argument(api_backend, dtype, which):
    device = api_backend.device
    mu, logvar = latent((4, 9), dtype, device=device)
    p = randn((9,), dtype, torch.Generator().manual_seed(3), 0.7, device=device)
    priors = {"prior_mu": p, "prior_logvar": None} if which == "prior_mu" else {"prior_mu": None, "prior_logvar": p}
    kl = vae_ext.gaussian_kl(mu, logvar, reduction="none", **priors)
    expected = kl_formula(f64(mu), f64(logvar), f64(priors["prior_mu"]), f64(priors["prior_logvar"]))
    assert_kl_close(kl, expected, dtype, 9)


@pytest.mark.parametrize("kind", ("standard", "scalar_tensor", "per_latent", "full"))
def test_kl_is_exactly_zero_when_q_equals_p(api_backend, dtype, kind):
    device = api_backend.device
    shape = (4, 11)
    prior_mu, prior_logvar = make_prior(kind, shape, dtype, device=device)
    if kind == "standard":
        mu, logvar = torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)
    else:
        mu, logvar = prior_mu.expand(shape).clone(), prior_logvar.expand(shape).clone()
    kl = vae_ext.gaussian_kl(mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar, reduction="none")
    assert torch.equal(kl, torch.zeros(shape[0], dtype=compute_dtype(dtype), device=device))


@pytest.mark.parametrize("prior_logvar", (None, 30.0, -30.0))
def test_kl_finite_and_accurate_for_extreme_logvar(api_backend, dtype, prior_logvar):
    device = api_backend.device
    logvar = torch.tensor([[30.0, -30.0, 29.5, -29.5, 0.0, 1e-3]], dtype=dtype, device=device).repeat(3, 1)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=dtype, device=device)[:, None].expand(3, 6).contiguous()
    kl = vae_ext.gaussian_kl(mu, logvar, prior_logvar=prior_logvar, reduction="none")
    assert torch.isfinite(kl).all()
    assert_kl_close(kl, kl_formula(f64(mu), f64(logvar), None, f64(prior_logvar)), dtype, 6)


@pytest.mark.parametrize("gap", (1e-2, 1e-3, 1e-4))
def test_kl_stable_when_q_is_close_to_p(api_backend, gap):
    device = api_backend.device
    # expm1(x) - x keeps the error near ulp(x); the textbook form's is near ulp(1), which
    # for x = 1e-4 is ten times the KL itself.
    prior_logvar = torch.tensor([0.7, -1.3, 2.1], dtype=torch.float32, device=device)
    logvar = prior_logvar + gap  # lv - plv is exact in float32 (Sterbenz)
    mu = torch.zeros(1, 3, device=device)
    kl = vae_ext.gaussian_kl(mu, logvar[None], prior_logvar=prior_logvar, reduction="none")
    dlv = f64(logvar) - f64(prior_logvar)
    exact = (0.5 * (torch.expm1(dlv) - dlv)).sum()
    float32_eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(kl.double(), exact[None], rtol=0.0, atol=8 * float32_eps * dlv.abs().sum().item())


@pytest.mark.parametrize("kind", PRIOR_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kl_gradients(api_backend, dtype, kind, shape):
    device = api_backend.device
    mu, logvar = latent(shape, dtype, device=device)
    prior_mu, prior_logvar = make_prior(kind, shape, dtype, device=device)
    leaves = [
        t.requires_grad_(True) if isinstance(t, torch.Tensor) else t for t in (mu, logvar, prior_mu, prior_logvar)
    ]
    kl = vae_ext.gaussian_kl(*leaves[:2], prior_mu=leaves[2], prior_logvar=leaves[3], reduction="none")
    grad_kl = grad_like(kl, seed=5)
    tensor_leaves = [t for t in leaves if isinstance(t, torch.Tensor)]
    grads = torch.autograd.grad(kl, tensor_leaves, grad_kl)
    oracle_inputs = [f64(t) if t is not None else None for t in leaves]
    expected = float64_grads(kl_distributions, oracle_inputs, (grad_kl,))
    expected_by_leaf = {id(t): e for t, e in zip(leaves, expected) if isinstance(t, torch.Tensor)}
    for leaf, grad in zip(tensor_leaves, grads):
        assert grad.shape == leaf.shape
        assert_close(grad, expected_by_leaf[id(leaf)], dtype, terms=prior_terms(leaf, shape))


def test_kl_gradient_only_for_the_prior(api_backend):
    device = api_backend.device
    mu, logvar = latent((6, 5), torch.float64, device=device)
    prior_logvar = randn((5,), torch.float64, torch.Generator().manual_seed(2), device=device).requires_grad_(True)
    kl = vae_ext.gaussian_kl(mu, logvar, prior_logvar=prior_logvar, reduction="none")
    grad_kl = grad_like(kl)
    (grad,) = torch.autograd.grad(kl, prior_logvar, grad_kl)
    _, _, _, expected = float64_grads(kl_distributions, (mu, logvar, None, prior_logvar), (grad_kl,))
    assert_close(grad, expected, torch.float64, terms=6)


@pytest.mark.parametrize("kind", ("standard", "scalar_tensor", "per_latent", "per_latent_keepdim", "full"))
def test_kl_gradcheck(backend, kind):
    device = backend.device
    shape = (3, 4)
    mu, logvar = latent(shape, torch.float64, device=device)
    prior_mu, prior_logvar = make_prior(kind, shape, torch.float64, device=device)
    inputs = tuple(t.requires_grad_(True) for t in (mu, logvar, prior_mu, prior_logvar) if t is not None)

    def kl_of(*args):
        return backend.gaussian_kl(*args, *(None,) * (4 - len(args)))

    assert torch.autograd.gradcheck(kl_of, inputs)


@pytest.mark.parametrize("reduction", ("none", "sum", "mean"))
def test_kl_reductions(api_backend, dtype, reduction):
    device = api_backend.device
    shape = (6, 8)
    mu, logvar = latent(shape, dtype, device=device)
    mu.requires_grad_(True)
    kl = vae_ext.gaussian_kl(mu, logvar, reduction=reduction)
    per_sample = kl_formula(f64(mu), f64(logvar))
    expected = {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]
    assert kl.shape == expected.shape
    assert_kl_close(kl, expected, dtype, math.prod(shape) if reduction != "none" else shape[1])
    weight = grad_like(kl, seed=9)
    (grad,) = torch.autograd.grad(kl, mu, weight)
    per_sample_weight = {"none": f64(weight), "sum": f64(weight).expand(6), "mean": f64(weight).expand(6) / 6}
    scale = per_sample_weight[reduction][:, None]
    assert_close(grad, f64(mu) * scale, dtype)


def test_kl_default_reduction_is_batch_mean(api_backend):
    device = api_backend.device
    mu, logvar = latent((5, 3), torch.float64, device=device)
    assert torch.equal(vae_ext.gaussian_kl(mu, logvar), vae_ext.gaussian_kl(mu, logvar, reduction="none").mean())


def test_kl_python_float_prior_equals_tensor_prior(api_backend, dtype):
    device = api_backend.device
    mu, logvar = latent((4, 5), dtype, device=device)
    from_float = vae_ext.gaussian_kl(mu, logvar, prior_mu=0.5, prior_logvar=-0.25, reduction="none")
    pm, plv = torch.tensor(0.5, dtype=dtype, device=device), torch.tensor(-0.25, dtype=dtype, device=device)
    assert torch.equal(from_float, vae_ext.gaussian_kl(mu, logvar, prior_mu=pm, prior_logvar=plv, reduction="none"))
    zero_floats = vae_ext.gaussian_kl(mu, logvar, prior_mu=0.0, prior_logvar=0.0, reduction="none")
    assert torch.equal(zero_floats, vae_ext.gaussian_kl(mu, logvar, reduction="none"))


def test_kl_per_sample_sums_every_non_batch_dim(api_backend):
    device = api_backend.device
    mu4, logvar4 = latent((3, 2, 5, 4), torch.float64, device=device)
    kl4 = vae_ext.gaussian_kl(mu4, logvar4, reduction="none")
    kl2 = vae_ext.gaussian_kl(mu4.reshape(3, 40), logvar4.reshape(3, 40), reduction="none")
    torch.testing.assert_close(kl4, kl2, rtol=1e-14, atol=0.0)
    element = 0.5 * (mu4**2 + torch.exp(logvar4) - logvar4 - 1.0)
    torch.testing.assert_close(kl4, element.sum(dim=(1, 2, 3)), rtol=1e-12, atol=1e-12)
