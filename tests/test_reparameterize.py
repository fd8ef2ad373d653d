"""reparameterize (given ε), reparameterize_sampled and reparameterize_backward: values and
gradients, on every device (the `backend` fixture, tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch
from helpers import (
    KERNEL_SHAPES,
    assert_close,
    f64,
    float64_grads,
    grad_like,
    latent,
    randn,
    sampled_eps64,
    seed_tensor,
    skip_cuda_split_shape_on_cpu,
    z_formula,
)

import vae_ext
from vae_ext import reference

ON_EVERY_DEVICE = True
SHAPES = ((1, 1), (4, 9), (3, 2, 3, 4), (6,))
SEED = 0x5DEECE66D


def given_eps(shape, dtype, seed=11, device="cpu"):
    return randn(shape, dtype, torch.Generator().manual_seed(seed), device=device)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_values(backend, dtype, shape):
    mu, logvar = latent(shape, dtype, device=backend.device)
    eps = given_eps(shape, dtype, device=backend.device)
    z = backend.reparameterize(mu, logvar, eps)
    assert z.shape == mu.shape and z.is_contiguous()
    assert_close(z, z_formula(f64(mu), f64(logvar), f64(eps)), dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_sampled_values(backend, dtype, shape):
    mu, logvar = latent(shape, dtype, device=backend.device)
    z = backend.reparameterize_sampled(mu, logvar, seed_tensor(606, backend.device))
    assert z.shape == mu.shape and z.dtype == dtype
    assert_close(z, z_formula(f64(mu), f64(logvar), sampled_eps64(606, mu)), dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_gradients(api_backend, dtype, shape):
    mu, logvar = latent(shape, dtype, device=api_backend.device)
    eps = given_eps(shape, dtype, device=api_backend.device)
    leaves = [t.requires_grad_(True) for t in (mu, logvar, eps)]
    z = vae_ext.reparameterize(*leaves[:2], eps=leaves[2])
    grad_z = grad_like(z)
    grads = torch.autograd.grad(z, leaves, grad_z)
    expected = float64_grads(z_formula, leaves, (grad_z,))
    for grad, exp in zip(grads, expected):
        assert_close(grad, exp, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_sampled_gradients(backend, dtype, shape):
    mu, logvar = latent(shape, dtype, device=backend.device)
    leaves = [t.requires_grad_(True) for t in (mu, logvar)]
    z = backend.reparameterize_sampled(*leaves, seed_tensor(-77, backend.device))
    grad_z = grad_like(z)
    grad_mu, grad_logvar = torch.autograd.grad(z, leaves, grad_z)
    eps = sampled_eps64(-77, mu)
    assert torch.equal(grad_mu, grad_z)
    assert_close(grad_logvar, f64(grad_z) * 0.5 * eps * torch.exp(0.5 * f64(logvar)), dtype)


@pytest.mark.parametrize("requires", ((True, False, False), (False, True, False), (False, False, True)))
def test_reparameterize_gradient_of_one_input(api_backend, requires):
    device = api_backend.device
    tensors = [*latent((5, 6), torch.float64, device=device), given_eps((5, 6), torch.float64, device=device)]
    leaves = [t.requires_grad_(r) for t, r in zip(tensors, requires)]
    z = vae_ext.reparameterize(*leaves[:2], eps=leaves[2])
    grad_z = grad_like(z)
    wanted = [leaf for leaf in leaves if leaf.requires_grad]
    (grad,) = torch.autograd.grad(z, wanted, grad_z)
    expected = float64_grads(z_formula, tensors, (grad_z,))[requires.index(True)]
    assert_close(grad, expected, torch.float64)


def test_reparameterize_gradcheck(backend):
    mu, logvar = latent((3, 4), torch.float64, device=backend.device)
    eps = given_eps((3, 4), torch.float64, device=backend.device)
    inputs = tuple(t.requires_grad_(True) for t in (mu, logvar, eps))
    assert torch.autograd.gradcheck(backend.reparameterize, inputs)


def test_reparameterize_sampled_gradcheck(backend):
    mu, logvar = latent((3, 4), torch.float64, device=backend.device)
    seed = seed_tensor(5, backend.device)
    inputs = (mu.requires_grad_(True), logvar.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda m, lv: backend.reparameterize_sampled(m, lv, seed), inputs)


@pytest.mark.parametrize("source", ("eps", "seed"))
def test_reparameterize_backward_op(backend, dtype, source):
    grad_z, logvar = latent((4, 13), dtype, seed=3, device=backend.device)
    eps = given_eps((4, 13), dtype, device=backend.device) if source == "eps" else None
    seed = seed_tensor(8, backend.device) if source == "seed" else None
    grad_logvar = backend.reparameterize_backward(grad_z, logvar, eps, seed)
    eps64 = f64(eps) if eps is not None else sampled_eps64(8, logvar)
    assert_close(grad_logvar, f64(grad_z) * 0.5 * eps64 * torch.exp(0.5 * f64(logvar)), dtype)


def test_sampled_logvar_gradient_exact_when_mu_dwarfs_sigma(backend):
    # z - mu rounds ε away entirely here; backward must regenerate ε from the seed.
    mu = torch.full((2, 64), 1.0e4, device=backend.device)
    logvar = torch.full((2, 64), -20.0, device=backend.device, requires_grad=True)
    z = backend.reparameterize_sampled(mu, logvar, seed_tensor(3, backend.device))
    assert torch.equal(z, mu)
    grad_z = grad_like(z)
    (grad_logvar,) = torch.autograd.grad(z, logvar, grad_z)
    expected = f64(grad_z) * 0.5 * sampled_eps64(3, mu) * torch.exp(torch.tensor(-10.0, dtype=torch.float64))
    torch.testing.assert_close(grad_logvar.cpu().double(), expected, rtol=4e-6, atol=0.0)  # values are ~1e-5


def test_functional_reparameterize_given_eps_uses_it(api_backend, dtype):
    mu, logvar = latent((3, 7), dtype, device=api_backend.device)
    eps = given_eps((3, 7), dtype, device=api_backend.device)
    assert torch.equal(vae_ext.reparameterize(mu, logvar, eps=eps), api_backend.reparameterize(mu, logvar, eps))


@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
def test_reparameterize_backward_op_over_kernel_shapes(backend, dtype, shape):
    skip_cuda_split_shape_on_cpu(backend, shape)
    # The rows the CUDA kernels split differently (tests/test_cuda.py keeps only what is CUDA's own).
    _, logvar = latent(shape, dtype, device=backend.device)
    gen = torch.Generator().manual_seed(100)
    eps = randn(shape, dtype, gen, device=backend.device)
    grad_z = randn(shape, dtype, gen, shift=0.25, device=backend.device)
    sampled = backend.reparameterize_backward(grad_z, logvar, None, seed_tensor(SEED, backend.device))
    expected = reference.reparameterize_backward(f64(grad_z), f64(logvar), None, seed_tensor(SEED))
    assert sampled.shape == shape
    assert_close(sampled, expected, dtype)
    given = backend.reparameterize_backward(grad_z, logvar, eps, None)
    assert_close(given, reference.reparameterize_backward(f64(grad_z), f64(logvar), f64(eps)), dtype)


@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
def test_reparameterize_ops_equal_the_fused_op(backend, dtype, shape):
    skip_cuda_split_shape_on_cpu(backend, shape)
    mu, logvar = latent(shape, dtype, device=backend.device)
    eps = given_eps(shape, dtype, device=backend.device)
    seed = seed_tensor(SEED, backend.device)
    z_fused, _ = backend.reparameterize_kl(mu, logvar, None, seed, None, None)
    assert torch.equal(backend.reparameterize_sampled(mu, logvar, seed), z_fused)
    z_given, _ = backend.reparameterize_kl(mu, logvar, eps, None, None, None)
    assert torch.equal(backend.reparameterize(mu, logvar, eps), z_given)
