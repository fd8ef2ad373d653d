"""Calls that once returned a wrong result without a word, each now an error naming the
argument (or the right result): positional priors read as eps, a per-sample KL of the wrong
shape broadcast into the loss, and loss options the likelihood cannot use."""

from __future__ import annotations

import pytest
import torch
from helpers import kl_formula

import vae_ext

B, L = 4, 5


def _full_priors(seed=0):
    """mu, logvar and full (conditional) priors [B, L]: the case where a positional prior read
    as eps raised nothing."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, L, generator=gen, dtype=torch.float64) for _ in range(4)]


def test_priors_in_the_place_of_eps_raise():
    mu, logvar, pm, plv = _full_priors()
    with pytest.raises(TypeError, match="positional"):
        vae_ext.reparameterize_kl(mu, logvar, pm, plv)  # once: eps = pm, prior_mu = plv
    with pytest.raises(TypeError, match="positional"):
        vae_ext.gaussian_kl(mu, logvar, pm, plv)
    with pytest.raises(TypeError, match="positional"):
        vae_ext.reparameterize(mu, logvar, pm)


def test_keyword_priors_mean_the_same_in_every_function():
    mu, logvar, pm, plv = _full_priors()
    expected = kl_formula(mu, logvar, pm, plv)
    _, fused = vae_ext.reparameterize_kl(mu, logvar, prior_mu=pm, prior_logvar=plv)
    alone = vae_ext.gaussian_kl(mu, logvar, prior_mu=pm, prior_logvar=plv, reduction="none")
    torch.testing.assert_close(fused, expected)
    assert torch.equal(fused, alone)


def test_modules_take_eps_and_generator_by_keyword_only():
    model = vae_ext.VAE(torch.nn.Linear(3, 2 * L), torch.nn.Linear(L, 3), latent_dim=L, likelihood="gaussian")
    x = torch.randn(B, 3)
    with pytest.raises(TypeError, match="positional"):
        model(x, torch.zeros(B, L))
    with pytest.raises(TypeError, match="positional"):
        model.latent(torch.randn(B, 2 * L), torch.zeros(B, L))
    with pytest.raises(TypeError, match="positional"):
        model.sample(3, torch.Generator())
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 3)


def _elbo_inputs():
    gen = torch.Generator().manual_seed(1)
    x_hat, x, mu, logvar = (torch.randn(B, L, generator=gen) for _ in range(4))
    z, kl = vae_ext.reparameterize_kl(mu, logvar, generator=gen)
    return x_hat, x, mu, logvar, kl


@pytest.mark.parametrize("reduction", ("sum", "mean", "none"))
def test_a_given_kl_of_shape_b_equals_the_computed_one(reduction):
    x_hat, x, mu, logvar, kl = _elbo_inputs()
    loss_fn = vae_ext.ELBOLoss("gaussian", reduction=reduction)
    given = loss_fn(x_hat, x, mu, logvar, kl=kl)
    torch.testing.assert_close(given, loss_fn(x_hat, x, mu, logvar))
    assert given.shape == ((B,) if reduction == "none" else ())


@pytest.mark.parametrize(
    "bad_kl",
    (
        lambda kl: kl[:, None],  # [B, 1]: "sum" was B times too large, "none" gave [B, B]
        lambda kl: kl.mean(),  # gaussian_kl's default reduction: broadcast to every sample
        lambda kl: kl[:-1],
        lambda kl: kl.int(),
        lambda kl: kl.tolist(),
    ),
    ids=("B-by-1", "scalar", "short", "integer", "list"),
)
@pytest.mark.parametrize("free_bits", (0.0, 0.5))
def test_a_kl_that_is_not_per_sample_raises(bad_kl, free_bits):
    x_hat, x, mu, logvar, kl = _elbo_inputs()
    with pytest.raises((TypeError, ValueError), match=r"\bkl\b"):
        vae_ext.ELBOLoss("gaussian", reduction="sum", free_bits=free_bits)(x_hat, x, mu, logvar, kl=bad_kl(kl))


def test_free_bits_report_the_given_kl():
    x_hat, x, mu, logvar, kl = _elbo_inputs()
    loss_fn = vae_ext.ELBOLoss("gaussian", free_bits=0.5)
    given = loss_fn(x_hat, x, mu, logvar, kl=kl, return_parts=True)
    computed = loss_fn(x_hat, x, mu, logvar, return_parts=True)
    torch.testing.assert_close(given.kl, computed.kl)
    assert torch.equal(given.loss, computed.loss)


@pytest.mark.parametrize("obs_logvar", (0.5, torch.zeros(L)))
def test_bernoulli_refuses_an_observation_variance(obs_logvar):
    with pytest.raises(ValueError, match="obs_logvar"):
        vae_ext.ELBOLoss("bernoulli", obs_logvar=obs_logvar)
    with pytest.raises(ValueError, match="obs_logvar"):
        vae_ext.VAE(torch.nn.Identity(), torch.nn.Identity(), latent_dim=L, obs_logvar=obs_logvar)


def test_gaussian_obs_logvar_is_used_and_shown():
    x_hat, x, mu, logvar, kl = _elbo_inputs()
    unit = vae_ext.ELBOLoss("gaussian")(x_hat, x, mu, logvar, kl=kl)
    wide = vae_ext.ELBOLoss("gaussian", obs_logvar=1.0)
    assert not torch.equal(unit, wide(x_hat, x, mu, logvar, kl=kl))
    assert "obs_logvar=1.0" in repr(wide)


def test_a_complex_target_raises():
    x_hat, x, mu, logvar, kl = _elbo_inputs()
    for likelihood in ("gaussian", "bernoulli"):
        with pytest.raises(TypeError, match=r"\bx\b"):
            vae_ext.ELBOLoss(likelihood)(x_hat, x.to(torch.complex64), mu, logvar, kl=kl)


def test_bernoulli_targets_of_bool_and_integer_dtypes_convert():
    x_hat, x, mu, logvar, kl = _elbo_inputs()
    binary = x > 0
    loss_fn = vae_ext.ELBOLoss("bernoulli")
    expected = loss_fn(x_hat, binary.float(), mu, logvar, kl=kl)
    assert torch.equal(loss_fn(x_hat, binary, mu, logvar, kl=kl), expected)
    assert torch.equal(loss_fn(x_hat, binary.to(torch.uint8), mu, logvar, kl=kl), expected)
    with pytest.raises(TypeError, match=r"\bx\b"):
        vae_ext.ELBOLoss("gaussian")(x_hat, binary, mu, logvar, kl=kl)
