"""torch.func (grad, vjp, jacrev, jacfwd, vmap) through every sampling path of the distributions
and modules, against plain autograd with the same seed."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import vae_ext
from vae_ext.distributions import DiagonalGaussian, DiagonalGaussianDistribution

LATENT = vae_ext.GaussianLatent((2, 2, 3))


def distribution_sample(h):
    q = DiagonalGaussian(*h.chunk(2, dim=1))
    return q.rsample() + q.rsample((2,)).mean(0) + kl_divergence(q, Normal(0.0, 1.0))[:, None, None, None]


def diffusers_class_sample(h):
    posterior = DiagonalGaussianDistribution(h)
    return posterior.sample() + posterior.kl()[:, None, None, None]


def latent_posterior_sample(h):
    return LATENT.posterior(h).rsample()


def generator_sample(h):
    return DiagonalGaussianDistribution(h).sample(generator=torch.Generator().manual_seed(7))


PATHS = {
    "DiagonalGaussian": distribution_sample,
    "DiagonalGaussianDistribution": diffusers_class_sample,
    "GaussianLatent.posterior": latent_posterior_sample,
    "generator": generator_sample,
}


def h_input():
    h = torch.randn(2, 4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return h.contiguous(memory_format=torch.channels_last)


def seeded(fn, seed=3):
    def call(*args):
        torch.manual_seed(seed)
        return fn(*args)

    return call


def loss(path):
    weights = torch.randn(2, 2, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return lambda h: (PATHS[path](h) * weights).sum()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_grad_and_vjp_are_autograds(api_backend, path):
    h = h_input()
    leaf = h.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(seeded(loss(path))(leaf), leaf)
    torch.testing.assert_close(torch.func.grad(seeded(loss(path)))(h), expected, rtol=1e-12, atol=1e-12)
    out, vjp = torch.func.vjp(seeded(PATHS[path]), h)
    cotangent = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(2))
    (expected_vjp,) = torch.autograd.grad(seeded(PATHS[path])(leaf), leaf, cotangent)
    torch.testing.assert_close(vjp(cotangent)[0], expected_vjp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_jacrev_and_jacfwd_are_autograds_jacobian(api_backend, path):
    h = h_input()
    expected = torch.autograd.functional.jacobian(seeded(PATHS[path]), h)
    torch.testing.assert_close(torch.func.jacrev(seeded(PATHS[path]))(h), expected, rtol=1e-12, atol=1e-12)
    jacfwd = torch.func.jacfwd(seeded(PATHS[path]), randomness="same")(h)
    torch.testing.assert_close(jacfwd, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", sorted(set(PATHS) - {"generator"}))
def test_vmap_over_examples(api_backend, path):
    hs = torch.stack([h_input(), 2 * h_input()])  # two examples, each a batch of moments
    same = torch.func.vmap(seeded(PATHS[path]), randomness="same")(hs)
    for i in range(2):  # one seed for all: each example's plain call with that seed
        torch.testing.assert_close(same[i], seeded(PATHS[path])(hs[i]), rtol=1e-12, atol=1e-12)
    different = torch.func.vmap(seeded(PATHS[path]), randomness="different")(torch.stack([h_input(), h_input()]))
    assert not torch.equal(different[0], different[1])  # independent ε per example
    per_example = torch.func.vmap(torch.func.grad(seeded(loss(path))), randomness="same")(hs)
    for i in range(2):
        torch.testing.assert_close(per_example[i], torch.func.grad(seeded(loss(path)))(hs[i]), rtol=1e-12, atol=1e-12)
