"""reparameterize_kl and reparameterize_kl_backward: the fused op against the separate ops and
the float64 oracles, on every device (the `backend` / `api_backend` fixtures, tests/conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    KERNEL_SHAPES,
    PRIOR_KINDS,
    assert_close,
    assert_kl_close,
    compute_dtype,
    f64,
    float64_grads,
    fused_oracle,
    grad_like,
    kl_distributions,
    latent,
    randn,
    sampled_eps64,
    seed_tensor,
    skip_cuda_split_shape_on_cpu,
    tensor_priors,
    z_formula,
)

import vae_ext
from vae_ext import reference

ON_EVERY_DEVICE = True
SHAPE = (5, 7)
SOURCES = ("eps", "seed")
SEED = 4242


def eps_and_seed(source, shape, dtype, device="cpu"):
    if source == "eps":
        return randn(shape, dtype, torch.Generator().manual_seed(13), device=device), None
    return None, seed_tensor(SEED, device)


def eps64(eps, like):
    return f64(eps) if eps is not None else sampled_eps64(SEED, like)


@pytest.mark.parametrize("kind", PRIOR_KINDS)
@pytest.mark.parametrize("source", SOURCES)
def test_fused_equals_separate_ops(backend, dtype, kind, source):
    device = backend.device
    mu, logvar = latent(SHAPE, dtype, device=device)
    eps, seed = eps_and_seed(source, SHAPE, dtype, device)
    prior_mu, prior_logvar = tensor_priors(kind, SHAPE, dtype, device=device)
    z, kl = backend.reparameterize_kl(mu, logvar, eps, seed, prior_mu, prior_logvar)
    separate_z = backend.reparameterize(mu, logvar, eps) if eps is not None else None
    if seed is not None:
        separate_z = backend.reparameterize_sampled(mu, logvar, seed)
    assert torch.equal(z, separate_z)
    separate_kl = backend.gaussian_kl(mu, logvar, prior_mu, prior_logvar)
    assert kl.dtype == separate_kl.dtype == compute_dtype(dtype)
    # Equal up to the order of the row sum.
    torch.testing.assert_close(kl, separate_kl, rtol=2 * torch.finfo(kl.dtype).eps, atol=0.0)


@pytest.mark.parametrize("kind", PRIOR_KINDS)
@pytest.mark.parametrize("source", SOURCES)
def test_fused_values(backend, dtype, kind, source):
    device = backend.device
    mu, logvar = latent(SHAPE, dtype, device=device)
    eps, seed = eps_and_seed(source, SHAPE, dtype, device)
    prior_mu, prior_logvar = tensor_priors(kind, SHAPE, dtype, device=device)
    z, kl = backend.reparameterize_kl(mu, logvar, eps, seed, prior_mu, prior_logvar)
    expected_z, expected_kl = fused_oracle(eps64(eps, mu), kl_distributions)(
        f64(mu), f64(logvar), f64(prior_mu), f64(prior_logvar)
    )
    assert_close(z, expected_z, dtype)
    assert_kl_close(kl, expected_kl, dtype, SHAPE[1])


def fused_gradients(kind, source, dtype, use_z, use_kl, device):
    """Gradients of (z * grad_z).sum() + (kl * grad_kl).sum() through the functional API."""
    mu, logvar = latent(SHAPE, dtype, device=device)
    eps, seed = eps_and_seed(source, SHAPE, dtype, device)
    prior_mu, prior_logvar = tensor_priors(kind, SHAPE, dtype, device=device)
    leaves = [t.requires_grad_(True) for t in (mu, logvar, eps, prior_mu, prior_logvar) if t is not None]
    if seed is not None:  # the functional API draws the seed: draw the same one from an equal generator
        seed = vae_ext.draw_seed(device, torch.Generator(device).manual_seed(0))
    generator = torch.Generator(device).manual_seed(0)
    z, kl = vae_ext.reparameterize_kl(
        mu, logvar, eps=eps, prior_mu=prior_mu, prior_logvar=prior_logvar, generator=generator
    )
    grad_z = grad_like(z, seed=21) if use_z else None
    grad_kl = grad_like(kl, seed=22) if use_kl else None
    loss = sum((out * g).sum() for out, g in ((z, grad_z), (kl, grad_kl)) if g is not None)
    grads = torch.autograd.grad(loss, leaves)
    return (mu, logvar, eps, seed, prior_mu, prior_logvar), leaves, grads, (grad_z, grad_kl)


def expected_fused_gradients(inputs, grad_outputs):
    mu, logvar, eps, seed, prior_mu, prior_logvar = inputs
    e64 = f64(eps) if eps is not None else sampled_eps64(seed, mu)

    def oracle(mu_, logvar_, eps_, prior_mu_, prior_logvar_):
        eps_value = eps_ if eps_ is not None else e64
        return fused_oracle(eps_value, kl_distributions)(mu_, logvar_, prior_mu_, prior_logvar_)

    return [g for g in float64_grads(oracle, (mu, logvar, eps, prior_mu, prior_logvar), grad_outputs) if g is not None]


@pytest.mark.parametrize("use", ("both", "z_only", "kl_only"))
@pytest.mark.parametrize("kind", PRIOR_KINDS)
@pytest.mark.parametrize("source", SOURCES)
def test_fused_gradients(api_backend, dtype, kind, source, use):
    inputs, leaves, grads, grad_outputs = fused_gradients(
        kind, source, dtype, use != "kl_only", use != "z_only", api_backend.device
    )
    expected = expected_fused_gradients(inputs, grad_outputs)
    for leaf, grad, exp in zip(leaves, grads, expected):
        assert grad.shape == leaf.shape and grad.dtype == leaf.dtype
        assert_close(grad, exp, dtype, terms=math.prod(SHAPE) // max(leaf.numel(), 1))


@pytest.mark.parametrize("kind", ("standard", "scalar_tensor", "per_latent", "per_latent_keepdim", "full"))
@pytest.mark.parametrize("source", SOURCES)
def test_fused_gradcheck(backend, kind, source):
    device = backend.device
    shape = (3, 4)
    mu, logvar = latent(shape, torch.float64, device=device)
    eps, seed = eps_and_seed(source, shape, torch.float64, device)
    prior_mu, prior_logvar = tensor_priors(kind, shape, torch.float64, device=device)
    differentiable = [t for t in (mu, logvar, eps, prior_mu, prior_logvar) if t is not None]
    for t in differentiable:
        t.requires_grad_(True)

    def fused(*args):
        values = iter(args)
        pick = [next(values) if t is not None else None for t in (mu, logvar, eps, prior_mu, prior_logvar)]
        return backend.reparameterize_kl(pick[0], pick[1], pick[2], seed, pick[3], pick[4])

    assert torch.autograd.gradcheck(fused, tuple(differentiable))


@pytest.mark.parametrize("prior_grads", (False, True))
@pytest.mark.parametrize("source", (None, "eps", "seed"))
def test_fused_backward_op(backend, dtype, source, prior_grads):
    device = backend.device
    mu, logvar = latent(SHAPE, dtype, device=device)
    eps, seed = eps_and_seed(source, SHAPE, dtype, device) if source else (None, None)
    prior_mu, prior_logvar = tensor_priors("per_latent", SHAPE, dtype, device=device)
    grad_z = grad_like(mu, seed=31) if source else None
    grad_kl = grad_like(torch.empty(SHAPE[0], dtype=compute_dtype(dtype), device=device), seed=32)
    outputs = backend.reparameterize_kl_backward(
        grad_z, grad_kl, mu, logvar, eps, seed, prior_mu, prior_logvar, prior_grads
    )
    e64 = eps64(eps, mu) if source else None
    full_prior = (prior_mu.expand(SHAPE), prior_logvar.expand(SHAPE))

    def oracle(mu_, logvar_, prior_mu_, prior_logvar_):
        kl = kl_distributions(mu_, logvar_, prior_mu_, prior_logvar_)
        return (z_formula(mu_, logvar_, e64), kl) if source else (kl,)

    grad_outputs = (grad_z, grad_kl) if source else (grad_kl,)
    expected = float64_grads(oracle, (mu, logvar, *full_prior), grad_outputs)
    assert_close(outputs[0], expected[0], dtype)
    assert_close(outputs[1], expected[1], dtype)
    if prior_grads:
        assert_close(outputs[2], expected[2], dtype)
        assert_close(outputs[3], expected[3], dtype)
    else:
        assert outputs[2].shape == (0,) and outputs[3].shape == (0,)


@pytest.mark.parametrize("reduction", ("none", "sum", "mean"))
def test_fused_reduction(api_backend, reduction):
    device = api_backend.device
    mu, logvar = latent(SHAPE, torch.float64, device=device)
    eps = randn(SHAPE, torch.float64, torch.Generator().manual_seed(1), device=device)
    z, kl = vae_ext.reparameterize_kl(mu, logvar, eps=eps, reduction=reduction)
    per_sample = vae_ext.gaussian_kl(mu, logvar, reduction="none")
    expected = {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]
    torch.testing.assert_close(kl, expected, rtol=1e-15, atol=0.0)
    assert torch.equal(z, api_backend.reparameterize(mu, logvar, eps))


def test_fused_needs_exactly_one_of_eps_and_seed(backend):
    device = backend.device
    mu, logvar = latent(SHAPE, torch.float32, device=device)
    eps = torch.randn(SHAPE, device=device)
    with pytest.raises(ValueError, match="eps"):
        backend.reparameterize_kl(mu, logvar, eps, seed_tensor(1, device), None, None)
    with pytest.raises(ValueError, match="seed"):
        backend.reparameterize_kl(mu, logvar, None, None, None, None)


# --------------------------------------------------------------------------- kernel shapes
# The rows every kernel splits its own way (helpers.KERNEL_SHAPES), against the float64 reference.


def kernel_case(shape, dtype, kind, device):
    """mu, logvar, eps, prior_mu, prior_logvar, grad_z, grad_kl on device."""
    mu, logvar = latent(shape, dtype, device=device)
    prior_mu, prior_logvar = tensor_priors(kind, shape, dtype, device=device)
    gen = torch.Generator().manual_seed(100)
    eps = randn(shape, dtype, gen, device=device)
    grad_z = randn(shape, dtype, gen, shift=0.25, device=device)
    grad_kl = randn(shape[:1], compute_dtype(dtype), gen, shift=0.5, device=device)
    return mu, logvar, eps, prior_mu, prior_logvar, grad_z, grad_kl


@pytest.mark.parametrize("kind", PRIOR_KINDS)
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
def test_fused_forward_over_kernel_shapes(backend, dtype, kind, shape):
    skip_cuda_split_shape_on_cpu(backend, shape)
    mu, logvar, eps, prior_mu, prior_logvar, _, _ = kernel_case(shape, dtype, kind, backend.device)
    seed = seed_tensor(SEED, backend.device)
    z, kl = backend.reparameterize_kl(mu, logvar, None, seed, prior_mu, prior_logvar)
    z_ref, kl_ref = reference.reparameterize_kl(
        f64(mu), f64(logvar), None, seed_tensor(SEED), f64(prior_mu), f64(prior_logvar)
    )
    assert z.is_contiguous() and z.shape == mu.shape and z.device == mu.device
    assert_close(z, z_ref, dtype)
    assert_kl_close(kl, kl_ref, dtype, math.prod(shape[1:]))

    z_given, kl_given = backend.reparameterize_kl(mu, logvar, eps, None, prior_mu, prior_logvar)
    assert_close(z_given, reference.reparameterize(f64(mu), f64(logvar), f64(eps)), dtype)
    assert torch.equal(kl_given, kl)
    assert torch.equal(backend.gaussian_kl(mu, logvar, prior_mu, prior_logvar), kl)


@pytest.mark.parametrize("kind", PRIOR_KINDS)
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
def test_fused_backward_over_kernel_shapes(backend, dtype, kind, shape):
    skip_cuda_split_shape_on_cpu(backend, shape)
    mu, logvar, eps, prior_mu, prior_logvar, grad_z, grad_kl = kernel_case(shape, dtype, kind, backend.device)
    prior_grads = prior_mu is not None
    seed = seed_tensor(SEED, backend.device)
    # KL only; z (from the seed) and KL; z alone from a given eps.
    for g_z, g_kl, e, s in ((None, grad_kl, None, None), (grad_z, grad_kl, None, seed), (grad_z, None, eps, None)):
        got = backend.reparameterize_kl_backward(g_z, g_kl, mu, logvar, e, s, prior_mu, prior_logvar, prior_grads)
        want = reference.reparameterize_kl_backward(
            f64(g_z),
            f64(g_kl),
            f64(mu),
            f64(logvar),
            f64(e),
            None if s is None else seed_tensor(SEED),
            f64(prior_mu),
            f64(prior_logvar),
            prior_grads,
        )
        for actual, expected in zip(got, want):
            assert actual.shape == expected.shape
            assert_close(actual, expected, dtype)


@pytest.mark.parametrize("shape", [(0, 8), (6, 0), (0, 3, 4)], ids=str)
def test_fused_empty_shapes(backend, shape):
    mu, logvar = latent(shape, torch.float32, device=backend.device)
    seed = seed_tensor(SEED, backend.device)
    z, kl = backend.reparameterize_kl(mu, logvar, None, seed, None, None)
    assert z.shape == mu.shape and kl.shape == (shape[0],)
    assert torch.equal(kl, torch.zeros_like(kl))
    grads = backend.reparameterize_kl_backward(mu, kl, mu, logvar, None, seed, None, None, False)
    assert grads[0].shape == mu.shape and grads[1].shape == mu.shape


@pytest.mark.parametrize("shape", [(2, 65536 + 3), (3, 65536), (300, 1024), (4096, 64), (5000, 3)], ids=str)
def test_fused_is_bit_reproducible(backend, dtype, shape):
    skip_cuda_split_shape_on_cpu(backend, shape)
    mu, logvar, _, prior_mu, prior_logvar, _, _ = kernel_case(shape, dtype, "full", backend.device)
    args = (mu, logvar, None, seed_tensor(SEED, backend.device), prior_mu, prior_logvar)
    z1, kl1 = backend.reparameterize_kl(*args)
    z2, kl2 = backend.reparameterize_kl(*args)
    assert torch.equal(kl1, kl2) and torch.equal(z1, z2)
    expected_kl = reference.gaussian_kl(f64(mu), f64(logvar), f64(prior_mu), f64(prior_logvar))
    assert_kl_close(kl1, expected_kl, dtype, math.prod(shape[1:]))
