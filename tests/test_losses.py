"""ELBOLoss, the likelihoods, the AE errors and the β schedules against torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

import vae_ext
from vae_ext import losses, schedules

B, D, L = 6, 20, 5


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _inputs(seed=0, dtype=torch.float64):
    """(x_hat logits, x in [0, 1], mu, logvar), all float64 leaves that require grad (but x)."""
    g = _gen(seed)
    x_hat = torch.randn(B, D, generator=g, dtype=torch.float64) * 2
    x = torch.rand(B, D, generator=g, dtype=torch.float64)
    mu = torch.randn(B, L, generator=g, dtype=torch.float64)
    logvar = torch.randn(B, L, generator=g, dtype=torch.float64) * 0.7 - 0.2
    return [t.to(dtype).requires_grad_(i != 1) for i, t in enumerate((x_hat, x, mu, logvar))]


def _bernoulli(logits):
    """Bernoulli(logits) whose log_prob also takes soft targets in [0, 1] (as BCE does)."""
    return Bernoulli(logits=logits, validate_args=False)


def _kl_dist(mu, logvar, prior_mu=0.0, prior_logvar=0.0):
    """Per-element KL(q || p) from torch.distributions."""
    pm = torch.as_tensor(prior_mu, dtype=mu.dtype)
    plv = torch.as_tensor(prior_logvar, dtype=mu.dtype)
    return kl_divergence(
        Normal(mu, torch.exp(0.5 * logvar)), Normal(pm.expand_as(mu), torch.exp(0.5 * plv).expand_as(mu))
    )


def _reduce(t, reduction):
    return {"none": t, "sum": t.sum(), "mean": t.mean()}[reduction]


def _grads(value, leaves, weights=None):
    out = value if weights is None else (value * weights).sum()
    return torch.autograd.grad(out, leaves)


def _assert_all_close(actual, expected, rtol=1e-10, atol=1e-10):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bernoulli_elbo_matches_distributions(api_backend, reduction):
    x_hat, x, mu, logvar = _inputs()
    loss_fn = vae_ext.ELBOLoss(likelihood="bernoulli", beta=0.7, reduction=reduction)
    parts = loss_fn(x_hat, x, mu, logvar, return_parts=True)

    recon = -_bernoulli(x_hat).log_prob(x).sum(dim=1)
    kl = _kl_dist(mu, logvar).sum(dim=1)
    expected = _reduce(recon + 0.7 * kl, reduction)
    torch.testing.assert_close(parts.loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.recon_loss, _reduce(recon, reduction), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.kl, _reduce(kl, reduction), rtol=1e-12, atol=1e-12)

    weights = torch.linspace(0.5, 1.5, B, dtype=torch.float64) if reduction == "none" else None
    _assert_all_close(_grads(parts.loss, [x_hat, mu, logvar], weights), _grads(expected, [x_hat, mu, logvar], weights))


def test_loss_without_parts_is_the_loss_tensor(api_backend):
    x_hat, x, mu, logvar = _inputs(1)
    loss_fn = vae_ext.ELBOLoss()
    loss = loss_fn(x_hat, x, mu, logvar)
    assert loss.shape == ()
    torch.testing.assert_close(loss, loss_fn(x_hat, x, mu, logvar, return_parts=True).loss)


@pytest.mark.parametrize("obs_logvar", [0.0, -0.8, "per_pixel"])
def test_gaussian_elbo_matches_distributions(api_backend, obs_logvar):
    x_hat, x, mu, logvar = _inputs(2)
    if obs_logvar == "per_pixel":
        obs_logvar = torch.linspace(-1.0, 0.5, D, dtype=torch.float64)
    loss_fn = vae_ext.ELBOLoss(likelihood="gaussian", obs_logvar=obs_logvar).double()
    parts = loss_fn(x_hat, x, mu, logvar, return_parts=True)

    scale = torch.exp(0.5 * torch.as_tensor(obs_logvar, dtype=torch.float64))
    recon = -Normal(x_hat, scale).log_prob(x).sum(dim=1)
    expected = (recon + _kl_dist(mu, logvar).sum(dim=1)).mean()
    torch.testing.assert_close(parts.loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.recon_loss, recon.mean(), rtol=1e-12, atol=1e-12)
    _assert_all_close(_grads(parts.loss, [x_hat, mu, logvar]), _grads(expected, [x_hat, mu, logvar]))


def test_gaussian_fixed_unit_variance_is_half_squared_error_plus_constant(api_backend):
    x_hat, x, _, _ = _inputs(3)
    nll = losses.gaussian_nll(x_hat, x)
    expected = 0.5 * ((x - x_hat) ** 2).sum(dim=1) + 0.5 * D * math.log(2 * math.pi)
    torch.testing.assert_close(nll, expected, rtol=1e-12, atol=1e-12)


def test_learned_per_pixel_obs_logvar_gets_the_distributions_gradient():
    x_hat, x, mu, logvar = _inputs(4)
    init = torch.linspace(-0.5, 0.5, D, dtype=torch.float64)
    loss_fn = vae_ext.ELBOLoss(likelihood="gaussian", obs_logvar=init, learn_obs_logvar=True).double()
    assert isinstance(loss_fn.obs_logvar, torch.nn.Parameter)
    loss = loss_fn(x_hat, x, mu, logvar)
    (grad,) = torch.autograd.grad(loss, [loss_fn.obs_logvar])

    leaf = init.clone().requires_grad_(True)
    expected = (-Normal(x_hat, torch.exp(0.5 * leaf)).log_prob(x).sum(dim=1) + _kl_dist(mu, logvar).sum(dim=1)).mean()
    (expected_grad,) = torch.autograd.grad(expected, [leaf])
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_learned_prior_tensors_get_the_distributions_gradient(api_backend):
    x_hat, x, mu, logvar = _inputs(5)
    g = _gen(50)
    prior_mu = (torch.randn(L, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    prior_logvar = (torch.randn(L, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    loss = vae_ext.ELBOLoss(beta=1.3)(x_hat, x, mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar)

    recon = -_bernoulli(x_hat).log_prob(x).sum(dim=1)
    expected = (recon + 1.3 * _kl_dist(mu, logvar, prior_mu, prior_logvar).sum(dim=1)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    leaves = [mu, logvar, prior_mu, prior_logvar]
    _assert_all_close(_grads(loss, leaves), _grads(expected, leaves))


def test_float_priors(api_backend):
    x_hat, x, mu, logvar = _inputs(6)
    loss = vae_ext.ELBOLoss()(x_hat, x, mu, logvar, prior_mu=0.5, prior_logvar=-0.25)
    expected = (-_bernoulli(x_hat).log_prob(x).sum(1) + _kl_dist(mu, logvar, 0.5, -0.25).sum(1)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_free_bits_matches_the_per_dimension_definition(api_backend, reduction):
    x_hat, x, mu, logvar = _inputs(7)
    per_dim_mean = _kl_dist(mu, logvar).mean(dim=0).detach()
    free_bits = float(per_dim_mean.median())  # some dimensions below λ, some above
    loss_fn = vae_ext.ELBOLoss(beta=0.9, free_bits=free_bits, reduction=reduction)
    parts = loss_fn(x_hat, x, mu, logvar, return_parts=True)

    recon = -_bernoulli(x_hat).log_prob(x).sum(dim=1)
    kl_elements = _kl_dist(mu, logvar)
    penalty = kl_elements.mean(dim=0).clamp(min=free_bits).sum()
    scale = B if reduction == "sum" else 1
    expected = _reduce(recon, reduction) + 0.9 * scale * penalty
    torch.testing.assert_close(parts.loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.kl_penalty, scale * penalty, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.kl, _reduce(kl_elements.sum(dim=1), reduction), rtol=1e-12, atol=1e-12)
    grads = _grads(parts.loss, [x_hat, mu, logvar])
    _assert_all_close(grads, _grads(expected, [x_hat, mu, logvar]))
    below = per_dim_mean < free_bits
    assert below.any() and (~below).any()
    assert torch.all(grads[1][:, below] == 0) and torch.all(grads[1][:, ~below].abs().sum(dim=0) > 0)


def test_free_bits_zero_takes_only_the_fused_path(api_backend, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the per-element reference KL must not run when free_bits == 0")

    calls = []
    original = api_backend.gaussian_kl
    monkeypatch.setattr(losses, "kl_elementwise", refuse)
    monkeypatch.setattr(api_backend.ops, "gaussian_kl", lambda *a: calls.append(1) or original(*a))
    x_hat, x, mu, logvar = _inputs(8)
    loss = vae_ext.ELBOLoss(free_bits=0.0)(x_hat, x, mu, logvar)
    assert calls == [1]
    assert torch.isfinite(loss)


def test_given_per_sample_kl_is_used_instead_of_recomputing(api_backend):
    x_hat, x, mu, logvar = _inputs(9)
    kl = torch.linspace(1.0, 2.0, B, dtype=torch.float64)
    parts = vae_ext.ELBOLoss(beta=2.0)(x_hat, x, mu, logvar, kl=kl, return_parts=True)
    recon = -_bernoulli(x_hat).log_prob(x).sum(dim=1)
    torch.testing.assert_close(parts.loss, (recon + 2.0 * kl).mean(), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- half precision


def test_half_kl_stays_finite_where_eager_fp16_overflows(api_backend):
    g = _gen(10)
    mu = (torch.randn(B, L, generator=g) * 0.5).half()
    logvar = torch.full((B, L), 12.0, dtype=torch.float16)  # e^12 = 162755 > fp16 max 65504
    naive = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar)
    assert torch.isinf(naive).all()

    x = torch.rand(B, D, generator=g)
    x_hat = torch.randn(B, D, generator=g).half()
    parts = vae_ext.ELBOLoss()(x_hat, x, mu, logvar, return_parts=True)
    assert parts.kl.dtype == torch.float32 and parts.loss.dtype == torch.float32
    expected_kl = _kl_dist(mu.double(), logvar.double()).sum(dim=1).mean()
    torch.testing.assert_close(parts.kl.double(), expected_kl, rtol=2e-6, atol=0)
    assert torch.isfinite(parts.loss)


def test_bernoulli_sum_stays_finite_where_fp16_accumulation_overflows():
    g = _gen(11)
    n_pixels = 4096
    logits = (torch.randn(2, n_pixels, generator=g) * 4 + 40).half()  # confident and wrong: BCE about 40 each
    x = torch.zeros(2, n_pixels)
    naive = torch.nn.functional.binary_cross_entropy_with_logits(logits, x.half(), reduction="none").sum(dim=1)
    assert torch.isinf(naive).all()

    nll = losses.bernoulli_nll(logits, x)
    expected = -_bernoulli(logits.double()).log_prob(x.double()).sum(dim=1)
    assert nll.dtype == torch.float32
    torch.testing.assert_close(nll.double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_loss_under_autocast_accumulates_in_float32(api_backend, amp_dtype):
    g = _gen(12)
    features = torch.nn.Linear(8, 2 * L)
    decoder = torch.nn.Linear(L, D)
    with torch.no_grad():
        features.bias[L:] = 12.0  # logvar near 12: exp overflows half precision
    h_in, x, z = torch.randn(B, 8, generator=g), torch.rand(B, D, generator=g), torch.randn(B, L, generator=g)
    with torch.autocast("cpu", dtype=amp_dtype):
        h = features(h_in)
        mu, logvar = h.chunk(2, dim=1)
        x_hat = decoder(z)
        assert logvar.dtype == amp_dtype
        parts = vae_ext.ELBOLoss()(x_hat, x, mu, logvar, return_parts=True)
    assert parts.loss.dtype == torch.float32 and torch.isfinite(parts.loss)
    expected = (
        -_bernoulli(x_hat.double()).log_prob(x.double()).sum(1) + _kl_dist(mu.double(), logvar.double()).sum(1)
    ).mean()
    torch.testing.assert_close(parts.loss.double(), expected, rtol=1e-5, atol=0)
    naive_kl = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(dim=1)
    assert amp_dtype != torch.float16 or torch.isinf(naive_kl).all()
    # d KL / d logvar = expm1(12) / 2 is itself beyond fp16's range: fp16 training needs loss
    # scaling (GradScaler lowers its scale until the gradients fit), emulated here.
    scale = 2.0**-8 if amp_dtype == torch.float16 else 1.0
    (parts.loss * scale).backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in features.parameters())


# --------------------------------------------------------------------------- AE errors


def test_ae_errors_match_their_definitions():
    x_hat, x, _, _ = _inputs(13)
    squared = ((x_hat - x) ** 2).sum(dim=1)
    torch.testing.assert_close(losses.ae_reconstruction_error(x_hat, x, "mse"), squared, rtol=1e-12, atol=1e-12)
    l2 = losses.ae_reconstruction_error(x_hat, x, "l2")
    torch.testing.assert_close(l2, torch.sqrt(squared), rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(l2.mean(), [x_hat])
    torch.testing.assert_close(grad, (x_hat - x) / torch.sqrt(squared)[:, None] / B, rtol=1e-12, atol=1e-12)


def test_l2_error_gradient_is_finite_at_a_perfect_reconstruction():
    x = torch.rand(3, 4, generator=_gen(14), dtype=torch.float64)
    x_hat = torch.cat((x[:1], x[1:] + 0.25)).requires_grad_(True)  # first row exact
    (grad,) = torch.autograd.grad(losses.ae_reconstruction_error(x_hat, x, "l2").sum(), [x_hat])
    assert torch.isfinite(grad).all() and torch.all(grad[0] == 0) and torch.all(grad[1:] != 0)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"likelihood": "poisson"}, ValueError, "likelihood must be one of"),
        ({"beta": -0.5}, ValueError, "beta must be a finite number >= 0"),
        ({"beta": float("nan")}, ValueError, "beta"),
        ({"free_bits": -1.0}, ValueError, "free_bits"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"free_bits": 0.5, "reduction": "none"}, ValueError, "batch quantity"),
        ({"learn_obs_logvar": True}, ValueError, "likelihood='gaussian'"),
    ],
)
def test_bad_configuration_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        vae_ext.ELBOLoss(**kwargs)


def test_beta_setter_validates():
    loss_fn = vae_ext.ELBOLoss()
    loss_fn.beta = 0.25
    assert loss_fn.beta == 0.25
    with pytest.raises(ValueError, match="beta"):
        loss_fn.beta = -1


def test_shape_mismatch_names_x_hat():
    x_hat, x, mu, logvar = _inputs(15)
    with pytest.raises(ValueError, match="x_hat must have x's shape"):
        vae_ext.ELBOLoss()(x_hat[:, :-1], x, mu, logvar)


# --------------------------------------------------------------------------- β schedules


def test_linear_warmup():
    schedule = schedules.LinearWarmup(beta=2.0, warmup_steps=10)
    assert [schedule(s) for s in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]


def test_cyclical_schedule_repeats_its_ramp():
    schedule = schedules.CyclicalBeta(beta=1.0, cycle_steps=8, ramp_fraction=0.5)
    one_cycle = [schedule(s) for s in range(8)]
    assert one_cycle == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    assert [schedule(s) for s in range(8, 16)] == one_cycle


def test_make_beta_schedule():
    assert schedules.make_beta_schedule("none", 0.5, 100)(0) == 0.5
    linear = schedules.make_beta_schedule("linear", 1.0, 100, warmup_fraction=0.2)
    assert (linear(10), linear(20)) == (0.5, 1.0)
    cyclical = schedules.make_beta_schedule("cyclical", 1.0, 100, cycles=4)
    assert (cyclical(0), cyclical(25), cyclical(30)) == (0.0, 0.0, 0.4)
    with pytest.raises(ValueError, match="warmup must be one of"):
        schedules.make_beta_schedule("cosine", 1.0, 100)
    with pytest.raises(ValueError, match="beta"):
        schedules.LinearWarmup(beta=-1.0)
