"""reparameterize (given ε) and reparameterize_sampled: values and gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, f64, float64_grads, grad_like, latent, randn, seed_tensor, z_formula

import vae_ext
from vae_ext import reference

SHAPES = ((1, 1), (4, 9), (3, 2, 3, 4), (6,))


def given_eps(shape, dtype, seed=11):
    return randn(shape, dtype, torch.Generator().manual_seed(seed))


def reference_eps(seed, like):
    """The sampler's ε for `like` in float64: float32 normals, used as is in the compute dtype."""
    return reference.normals(seed, like.numel()).reshape(like.shape).double()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_values(backend, dtype, shape):
    mu, logvar = latent(shape, dtype)
    eps = given_eps(shape, dtype)
    z = backend.reparameterize(mu, logvar, eps)
    assert z.shape == mu.shape and z.is_contiguous()
    assert_close(z, z_formula(f64(mu), f64(logvar), f64(eps)), dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_sampled_values(backend, dtype, shape):
    mu, logvar = latent(shape, dtype)
    z = backend.reparameterize_sampled(mu, logvar, seed_tensor(606))
    assert z.shape == mu.shape and z.dtype == dtype
    assert_close(z, z_formula(f64(mu), f64(logvar), reference_eps(606, mu)), dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_gradients(api_backend, dtype, shape):
    mu, logvar = latent(shape, dtype)
    eps = given_eps(shape, dtype)
    leaves = [t.requires_grad_(True) for t in (mu, logvar, eps)]
    z = vae_ext.reparameterize(*leaves)
    grad_z = grad_like(z)
    grads = torch.autograd.grad(z, leaves, grad_z)
    expected = float64_grads(z_formula, leaves, (grad_z,))
    for grad, exp in zip(grads, expected):
        assert_close(grad, exp, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_sampled_gradients(backend, dtype, shape):
    mu, logvar = latent(shape, dtype)
    leaves = [t.requires_grad_(True) for t in (mu, logvar)]
    z = backend.reparameterize_sampled(*leaves, seed_tensor(-77))
    grad_z = grad_like(z)
    grad_mu, grad_logvar = torch.autograd.grad(z, leaves, grad_z)
    eps = reference_eps(-77, mu)
    assert torch.equal(grad_mu, grad_z)
    assert_close(grad_logvar, f64(grad_z) * 0.5 * eps * torch.exp(0.5 * f64(logvar)), dtype)


@pytest.mark.parametrize("requires", ((True, False, False), (False, True, False), (False, False, True)))
def test_reparameterize_gradient_of_one_input(api_backend, requires):
    tensors = [*latent((5, 6), torch.float64), given_eps((5, 6), torch.float64)]
    leaves = [t.requires_grad_(r) for t, r in zip(tensors, requires)]
    z = vae_ext.reparameterize(*leaves)
    grad_z = grad_like(z)
    wanted = [leaf for leaf in leaves if leaf.requires_grad]
    (grad,) = torch.autograd.grad(z, wanted, grad_z)
    expected = float64_grads(z_formula, tensors, (grad_z,))[requires.index(True)]
    assert_close(grad, expected, torch.float64)


def test_reparameterize_gradcheck(backend):
    mu, logvar = latent((3, 4), torch.float64)
    eps = given_eps((3, 4), torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (mu, logvar, eps))
    assert torch.autograd.gradcheck(backend.reparameterize, inputs)


def test_reparameterize_sampled_gradcheck(backend):
    mu, logvar = latent((3, 4), torch.float64)
    seed = seed_tensor(5)
    inputs = (mu.requires_grad_(True), logvar.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda m, lv: backend.reparameterize_sampled(m, lv, seed), inputs)


@pytest.mark.parametrize("source", ("eps", "seed"))
def test_reparameterize_backward_op(backend, dtype, source):
    grad_z, logvar = latent((4, 13), dtype, seed=3)
    eps = given_eps((4, 13), dtype) if source == "eps" else None
    seed = seed_tensor(8) if source == "seed" else None
    grad_logvar = backend.reparameterize_backward(grad_z, logvar, eps, seed)
    eps64 = f64(eps) if eps is not None else reference_eps(8, logvar)
    assert_close(grad_logvar, f64(grad_z) * 0.5 * eps64 * torch.exp(0.5 * f64(logvar)), dtype)


def test_sampled_logvar_gradient_exact_when_mu_dwarfs_sigma(backend):
    # z - mu rounds ε away entirely here; backward must regenerate ε from the seed.
    mu = torch.full((2, 64), 1.0e4)
    logvar = torch.full((2, 64), -20.0, requires_grad=True)
    z = backend.reparameterize_sampled(mu, logvar, seed_tensor(3))
    assert torch.equal(z, mu)
    grad_z = grad_like(z)
    (grad_logvar,) = torch.autograd.grad(z, logvar, grad_z)
    expected = f64(grad_z) * 0.5 * reference_eps(3, mu) * torch.exp(torch.tensor(-10.0, dtype=torch.float64))
    torch.testing.assert_close(grad_logvar.double(), expected, rtol=4e-6, atol=0.0)  # values are ~1e-5


def test_functional_reparameterize_given_eps_uses_it(api_backend, dtype):
    mu, logvar = latent((3, 7), dtype)
    eps = given_eps((3, 7), dtype)
    assert torch.equal(vae_ext.reparameterize(mu, logvar, eps), api_backend.reparameterize(mu, logvar, eps))
