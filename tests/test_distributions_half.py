"""Half-precision posteriors: KL, log_prob, entropy and nll in float32 (the compute dtype), so
they are finite wherever the float32 value is (diffusers rounds to the parameters' dtype)."""

from __future__ import annotations

import pytest
import torch
from helpers import HALF_DTYPES, dtype_id
from torch.distributions import Independent, Normal, kl_divergence

from vae_ext.distributions import DiagonalGaussian, DiagonalGaussianDistribution

SHAPE = (1, 4, 64, 64)  # one Stable Diffusion latent: 16384 terms per sample


def big_moments(dtype):
    """mu = 10, logvar = 10: per-sample KL, entropy and nll past float16's 65504."""
    return torch.full((SHAPE[0], 2 * SHAPE[1], *SHAPE[2:]), 10.0, dtype=dtype)


def float64_oracle(mu, logvar, value):
    mu, logvar, value = mu.double(), logvar.double(), value.double()
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 3)
    return {
        "kl": kl_divergence(q, Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 3)),
        "log_prob": q.log_prob(value),
        "entropy": q.entropy(),
    }


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_distribution_values_do_not_overflow(dtype):
    mu, logvar = big_moments(dtype).chunk(2, dim=1)
    value = torch.zeros(SHAPE, dtype=dtype)
    q = DiagonalGaussian(mu, logvar)
    ours = {"kl": kl_divergence(q, Normal(0.0, 1.0)), "log_prob": q.log_prob(value), "entropy": q.entropy()}
    for name, expected in float64_oracle(mu, logvar, value).items():
        assert expected.abs().min() > 65504  # past float16's range: rounding to dtype gave inf
        assert ours[name].dtype == torch.float32, name
        torch.testing.assert_close(ours[name].double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_diffusers_class_kl_and_nll_do_not_overflow(dtype):
    params = big_moments(dtype)
    posterior = DiagonalGaussianDistribution(params)
    mu, logvar = params.double().chunk(2, dim=1)
    value = torch.zeros(SHAPE, dtype=dtype)
    expected_kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum((1, 2, 3))
    expected_nll = 0.5 * (torch.log(torch.tensor(2 * torch.pi)) + logvar + mu**2 / logvar.exp()).sum((1, 2, 3))
    other = DiagonalGaussianDistribution(torch.zeros_like(params))
    cases = ((posterior.kl(), expected_kl), (posterior.kl(other), expected_kl), (posterior.nll(value), expected_nll))
    for ours, expected in cases:
        assert ours.dtype == torch.float32 and expected.min() > 65504
        torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=0)
    five_d = DiagonalGaussianDistribution(params.unsqueeze(-1))  # diffusers' formula path
    torch.testing.assert_close(five_d.kl().double().sum(-1), expected_kl, rtol=1e-5, atol=0)
