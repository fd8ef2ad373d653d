"""GaussianLatent.posterior / VAE.posterior as DiagonalGaussian, against the modules' fused pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence

import vae_ext

B, D, L = 5, 12, 3
PRIORS = {"standard": None, "learnable": "learnable", "fixed": (torch.tensor([0.5, -0.25, 1.0]), -0.4)}


def mlp_vae(prior):
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, 2 * L))
    decoder = nn.Sequential(nn.Linear(L, 16), nn.Tanh(), nn.Linear(16, D))
    model = vae_ext.VAE(encoder, decoder, latent_dim=L, prior=PRIORS[prior]).double()
    if prior == "learnable":
        with torch.no_grad():
            model.latent.prior_mu.copy_(torch.tensor([0.3, -0.7, 0.1]))
            model.latent.prior_logvar.copy_(torch.tensor([-0.2, 0.4, 0.0]))
    return model


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_posterior_kl_to_prior_is_the_forward_kl(api_backend, prior):
    model = mlp_vae(prior)
    x = torch.rand(B, D, dtype=torch.float64)
    q = model.posterior(x)
    assert isinstance(q, vae_ext.DiagonalGaussian) and q.batch_shape == (B,) and q.event_shape == (L,)
    kl = kl_divergence(q, model.prior())
    mu, logvar = model.encode(x)
    expected = vae_ext.gaussian_kl(
        mu, logvar, **dict(zip(("prior_mu", "prior_logvar"), model.latent.prior_params())), reduction="none"
    )
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl.mean(), model(x).kl, rtol=1e-12, atol=1e-12)
    params = [*model.encoder.parameters(), *model.latent.parameters()]
    grads = torch.autograd.grad(kl.sum(), params)
    for grad, exp in zip(grads, torch.autograd.grad(expected.sum(), params)):
        torch.testing.assert_close(grad, exp, rtol=1e-10, atol=1e-12)


def test_posterior_rsample_is_the_forward_sample(api_backend):
    model = mlp_vae("standard")
    x = torch.rand(B, D, dtype=torch.float64)
    z = model.posterior(x).rsample(generator=torch.Generator().manual_seed(4))
    assert torch.equal(z, model(x, generator=torch.Generator().manual_seed(4)).z)


def test_conv_latent_posterior_and_prior():
    latent = vae_ext.GaussianLatent((2, 3, 3), prior="learnable", logvar_clamp=4.0)
    h = 3 * torch.randn(4, 4, 3, 3)
    q = latent.posterior(h)
    assert q.event_shape == (2, 3, 3) and q.logvar.max() <= 4.0
    assert latent.prior().event_shape == (2, 3, 3)
    _, kl = latent(h, eps=torch.zeros(4, 2, 3, 3))
    torch.testing.assert_close(kl_divergence(q, latent.prior()), kl)
