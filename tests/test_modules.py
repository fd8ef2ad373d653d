"""VAE, AE and GaussianLatent against references written with torch.distributions."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

import vae_ext
from vae_ext import modules, reference

B, D, L, HIDDEN = 5, 12, 3, 16
F64 = dict(rtol=1e-10, atol=1e-10)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mlp_vae(seed=0, **kwargs):
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(D, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * L))
    decoder = nn.Sequential(nn.Linear(L, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, D))
    return vae_ext.VAE(encoder, decoder, latent_dim=L, **kwargs)


def _batch(seed=1, dtype=torch.float64):
    g = _gen(seed)
    return torch.rand(B, D, generator=g, dtype=dtype), torch.randn(B, L, generator=g, dtype=dtype)


def _prior_argument(kind):
    if kind == "fixed":
        return (torch.tensor([0.5, -0.25, 1.0], dtype=torch.float64), -0.4)
    return kind


def _randomize_learnable_prior(model, seed=3):
    g = _gen(seed)
    with torch.no_grad():
        model.latent.prior_mu.copy_(torch.randn(L, generator=g) * 0.5)
        model.latent.prior_logvar.copy_(torch.randn(L, generator=g) * 0.5)


def _prior_distribution(model, like):
    pm, plv = model.latent.prior_params()
    pm = torch.zeros((), dtype=like.dtype) if pm is None else pm
    plv = torch.zeros((), dtype=like.dtype) if plv is None else plv
    return Normal(pm.expand_as(like), torch.exp(0.5 * plv).expand_as(like))


def _likelihood(model, x_hat):
    if model.likelihood == "bernoulli":
        return Bernoulli(logits=x_hat, validate_args=False)  # soft targets, as BCE
    return Normal(x_hat, torch.exp(0.5 * torch.as_tensor(model.loss_fn.obs_logvar, dtype=x_hat.dtype)))


def _reference_forward(model, x, eps, beta, free_bits=0.0):
    """(loss, recon, kl, z, x_hat) from torch.distributions, on the model's own networks."""
    h = model.encoder(x)
    mu, logvar = h[:, :L], h[:, L:]
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = mu + eps * q.scale
    x_hat = model.decoder(z)
    recon = -_likelihood(model, x_hat).log_prob(x).sum(dim=1)
    kl_elements = kl_divergence(q, _prior_distribution(model, mu))
    kl = kl_elements.sum(dim=1)
    if free_bits > 0:
        loss = recon.mean() + beta * kl_elements.mean(dim=0).clamp(min=free_bits).sum()
    else:
        loss = (recon + beta * kl).mean()
    return loss, recon.mean(), kl.mean(), z, x_hat


def _grads(loss, model):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, allow_unused=True)


def _assert_grads_close(actual, expected, **tol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert (a is None) == (e is None)
        if a is not None:
            torch.testing.assert_close(a, e, **tol)


# --------------------------------------------------------------------------- VAE against the reference


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("prior", ["standard", "learnable", "fixed"])
def test_vae_matches_distributions(api_backend, likelihood, prior):
    model = _mlp_vae(likelihood=likelihood, prior=_prior_argument(prior), beta=0.8).double()
    if prior == "learnable":
        _randomize_learnable_prior(model)
    x, eps = _batch()
    out = model(x, eps=eps)
    loss, recon, kl, z, x_hat = _reference_forward(model, x, eps, beta=0.8)

    for actual, expected in ((out.loss, loss), (out.recon_loss, recon), (out.kl, kl), (out.z, z), (out.x_hat, x_hat)):
        torch.testing.assert_close(actual, expected, **F64)
    _assert_grads_close(_grads(out.loss, model), _grads(loss, model), **F64)
    if prior == "learnable":
        assert model.latent.prior_mu in set(model.parameters())


def test_vae_with_learned_obs_logvar_matches_distributions(api_backend):
    model = _mlp_vae(likelihood="gaussian", obs_logvar=-0.3, learn_obs_logvar=True).double()
    x, eps = _batch(2)
    out = model(x, eps=eps)
    loss, *_ = _reference_forward(model, x, eps, beta=1.0)
    torch.testing.assert_close(out.loss, loss, **F64)
    grads = _grads(out.loss, model)
    _assert_grads_close(grads, _grads(loss, model), **F64)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert grads[names.index("loss_fn.obs_logvar")] != 0


def test_vae_free_bits_matches_distributions(api_backend):
    model = _mlp_vae(beta=1.5).double()
    x, eps = _batch(3)
    with torch.no_grad():
        h = model.encoder(x)
        per_dim = kl_divergence(Normal(h[:, :L], torch.exp(0.5 * h[:, L:])), Normal(0.0, 1.0)).mean(dim=0)
    model.loss_fn.free_bits = float(per_dim.median())  # one latent dim held at λ, one above, one at it
    out = model(x, eps=eps)
    loss, recon, kl, *_ = _reference_forward(model, x, eps, beta=1.5, free_bits=model.loss_fn.free_bits)
    torch.testing.assert_close(out.loss, loss, **F64)
    torch.testing.assert_close(out.kl, kl, **F64)
    _assert_grads_close(_grads(out.loss, model), _grads(loss, model), **F64)


def test_sampled_eps_follows_the_generator_and_the_philox_stream(api_backend):
    model = _mlp_vae().double()
    x, _ = _batch(4)
    out = model(x, generator=_gen(11))
    seed = vae_ext.draw_seed("cpu", _gen(11))
    eps = reference.sample_eps(seed, out.mu)
    torch.testing.assert_close(out.z, out.mu + eps * torch.exp(0.5 * out.logvar), **F64)
    torch.testing.assert_close(model(x, generator=_gen(11)).z, out.z, rtol=0, atol=0)
    assert not torch.equal(model(x, generator=_gen(12)).z, out.z)


def test_mu_and_logvar_are_views_of_the_encoder_output():
    latent = vae_ext.GaussianLatent(L)
    h = torch.randn(B, 2 * L)
    mu, logvar = latent.split(h)
    assert mu._base is h and logvar._base is h
    assert mu.data_ptr() == h.data_ptr() and logvar.data_ptr() == h.data_ptr() + L * h.element_size()
    torch.testing.assert_close(logvar, h[:, L:], rtol=0, atol=0)


def test_logvar_clamp():
    h = torch.cat((torch.zeros(B, L), torch.linspace(-20, 20, B * L).reshape(B, L)), dim=1)
    _, logvar = vae_ext.GaussianLatent(L, logvar_clamp=6.0).split(h)
    assert logvar.min() == -6.0 and logvar.max() == 6.0
    _, logvar = vae_ext.GaussianLatent(L, logvar_clamp=(-9.0, 2.0)).split(h)
    torch.testing.assert_close(logvar, h[:, L:].clamp(-9.0, 2.0), rtol=0, atol=0)


def test_gaussian_latent_with_convolutional_features(api_backend):
    channels, height, width = 2, 3, 4
    g = _gen(5)
    h = torch.randn(B, 2 * channels, height, width, generator=g, dtype=torch.float64)
    eps = torch.randn(B, channels, height, width, generator=g, dtype=torch.float64)
    z, kl = vae_ext.GaussianLatent((channels, height, width))(h, eps=eps)
    mu, logvar = h[:, :channels], h[:, channels:]
    q = Normal(mu, torch.exp(0.5 * logvar))
    torch.testing.assert_close(z, mu + eps * q.scale, **F64)
    torch.testing.assert_close(kl, kl_divergence(q, Normal(0.0, 1.0)).sum(dim=(1, 2, 3)), **F64)


def test_conv_networks_build_a_working_vae():
    shape = (1, 8, 8)
    model = vae_ext.VAE(modules.conv_encoder(shape, 2 * L), modules.conv_decoder(L, shape), latent_dim=L)
    x = torch.rand(B, *shape, generator=_gen(6))
    out = model(x)
    assert out.x_hat.shape == x.shape and out.z.shape == (B, L) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------------- sampling and reconstruction


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_shapes_dtypes_and_generator(dtype):
    model = _mlp_vae().to(dtype)
    samples = model.sample(7, generator=_gen(7))
    assert samples.shape == (7, D) and samples.dtype == dtype
    assert samples.min() >= 0 and samples.max() <= 1  # Bernoulli means
    torch.testing.assert_close(model.sample(7, generator=_gen(7)), samples, rtol=0, atol=0)
    assert not torch.equal(model.sample(7, generator=_gen(8)), samples)


def test_sample_draws_from_the_learned_prior():
    model = _mlp_vae(prior="learnable")
    with torch.no_grad():
        model.latent.prior_mu.copy_(torch.tensor([3.0, -2.0, 0.5]))
        model.latent.prior_logvar.fill_(math.log(0.01))
    z = model.latent.sample_prior(4000, generator=_gen(9))
    torch.testing.assert_close(z.mean(dim=0), torch.tensor([3.0, -2.0, 0.5]), rtol=0, atol=4 * 0.1 / math.sqrt(4000))
    torch.testing.assert_close(z.std(dim=0), torch.full((L,), 0.1), rtol=0.05, atol=0)
    expected = model.mean(model.decoder(model.latent.sample_prior(6, generator=_gen(10))))
    torch.testing.assert_close(model.sample(6, generator=_gen(10)), expected, rtol=0, atol=0)


def test_gaussian_sample_is_the_decoder_mean():
    model = _mlp_vae(likelihood="gaussian").double()
    z = model.latent.sample_prior(4, generator=_gen(13), dtype=torch.float64)
    torch.testing.assert_close(model.sample(4, generator=_gen(13)), model.decoder(z), rtol=0, atol=0)


def test_reconstruct_goes_through_mu():
    model = _mlp_vae().double()
    x, _ = _batch(14)
    mu = model.encoder(x)[:, :L]
    torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(model.decoder(mu)), rtol=0, atol=0)


# --------------------------------------------------------------------------- importance-weighted log p(x)


def _linear_gaussian_vae(obs_var=0.5, seed=15, posterior_shift=0.0):
    """A linear-Gaussian VAE whose encoder is the exact posterior (shifted by posterior_shift)."""
    g = _gen(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    w = q[:, :L] * torch.tensor([1.5, 0.8, 0.4], dtype=torch.float64)  # orthogonal columns: diagonal posterior
    b = torch.randn(D, generator=g, dtype=torch.float64) * 0.3
    post_var = 1.0 / (1.0 + (w * w).sum(dim=0) / obs_var)
    encoder, decoder = nn.Linear(D, 2 * L).double(), nn.Linear(L, D).double()
    with torch.no_grad():
        decoder.weight.copy_(w)
        decoder.bias.copy_(b)
        gain = post_var[:, None] * w.T / obs_var
        encoder.weight.copy_(torch.cat((gain, torch.zeros(L, D, dtype=torch.float64))))
        encoder.bias.copy_(torch.cat((-gain @ b + posterior_shift, post_var.log())))
    model = vae_ext.VAE(encoder, decoder, latent_dim=L, likelihood="gaussian", obs_logvar=math.log(obs_var))
    marginal = MultivariateNormal(b, w @ w.T + obs_var * torch.eye(D, dtype=torch.float64))
    return model, marginal


@pytest.mark.parametrize("k", [1, 5])
def test_iwae_is_exact_with_the_true_posterior(k):
    model, marginal = _linear_gaussian_vae()
    x = marginal.sample((B,))
    log_px = model.log_likelihood(x, k=k, generator=_gen(16))
    assert log_px.shape == (B,) and log_px.dtype == torch.float64
    torch.testing.assert_close(log_px, marginal.log_prob(x), **F64)


def test_iwae_bound_tightens_with_k():
    model, marginal = _linear_gaussian_vae(posterior_shift=0.6)
    x = marginal.sample(
        (64,),
    ).detach()
    exact = marginal.log_prob(x).mean()
    with torch.no_grad():
        k1 = model.log_likelihood(x, k=1, generator=_gen(17)).mean()
        k64 = model.log_likelihood(x, k=64, generator=_gen(17)).mean()
    assert k1 < k64 < exact
    assert exact - k64 < 0.2 * (exact - k1)


# --------------------------------------------------------------------------- save / load


def test_state_dict_round_trip_restores_every_parameter_and_buffer(api_backend):
    kwargs = dict(likelihood="gaussian", prior="learnable", learn_obs_logvar=True, beta=0.5)
    model = _mlp_vae(seed=0, **kwargs).double()
    _randomize_learnable_prior(model)
    fixed = _mlp_vae(seed=0, prior=((0.25, -0.5))).double()
    for original in (model, fixed):
        buffer = io.BytesIO()
        torch.save(original.state_dict(), buffer)
        buffer.seek(0)
        restored = _mlp_vae(seed=1, **(kwargs if original is model else {"prior": (0.0, 0.0)})).double()
        restored.load_state_dict(torch.load(buffer, weights_only=True))
        x, eps = _batch(18)
        expected, actual = original(x, eps=eps), restored(x, eps=eps)
        for name in ("loss", "recon_loss", "kl", "x_hat", "z"):
            torch.testing.assert_close(getattr(actual, name), getattr(expected, name), rtol=0, atol=0)


# --------------------------------------------------------------------------- autocast


def test_vae_under_bf16_autocast_matches_float32(api_backend):
    model = _mlp_vae()
    x, eps = _batch(19, torch.float32)
    expected = model(x, eps=eps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, eps=eps.bfloat16())
    assert out.mu.dtype == torch.bfloat16 and out.z.dtype == torch.bfloat16
    assert out.loss.dtype == out.kl.dtype == out.recon_loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, expected.loss, rtol=2e-2, atol=0)
    torch.testing.assert_close(out.kl, expected.kl, rtol=5e-2, atol=5e-2)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_vae_under_fp16_autocast_stays_finite_where_eager_overflows(api_backend):
    model = _mlp_vae()
    with torch.no_grad():
        model.encoder[-1].bias[L:] = 12.0  # logvar about 12: e^12 overflows float16
    x, _ = _batch(20, torch.float32)
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(x, generator=_gen(21))
        naive_kl = 0.5 * (out.mu**2 + torch.exp(out.logvar) - 1 - out.logvar).sum(dim=1)
    assert out.logvar.dtype == torch.float16 and torch.isinf(naive_kl).all()
    expected_kl = kl_divergence(Normal(out.mu.double(), torch.exp(0.5 * out.logvar.double())), Normal(0.0, 1.0))
    torch.testing.assert_close(out.kl.double(), expected_kl.sum(dim=1).mean(), rtol=1e-5, atol=0)
    assert torch.isfinite(out.loss) and torch.isfinite(out.z).all()


# --------------------------------------------------------------------------- AE


@pytest.mark.parametrize("loss", ["mse", "l2"])
def test_ae_loss(loss):
    torch.manual_seed(22)
    ae = vae_ext.AE(nn.Linear(D, L).double(), nn.Linear(L, D).double(), loss=loss)
    x, _ = _batch(23)
    out = ae(x)
    z = ae.encoder(x)
    x_hat = ae.decoder(z)
    error = ((x - x_hat) ** 2).sum(dim=1)
    expected = error.mean() if loss == "mse" else error.sqrt().mean()
    torch.testing.assert_close(out.loss, expected, **F64)
    torch.testing.assert_close(out.z, z, rtol=0, atol=0)
    torch.testing.assert_close(ae.reconstruct(x), x_hat, rtol=0, atol=0)
    _assert_grads_close(_grads(out.loss, ae), _grads(expected, ae), **F64)


# --------------------------------------------------------------------------- bad configuration


def test_encoder_width_not_twice_the_latent_dim_raises():
    model = vae_ext.VAE(nn.Linear(D, 2 * L + 1), nn.Linear(L, D), latent_dim=L)
    with pytest.raises(ValueError, match=r"2 \* latent_dim"):
        model(torch.rand(B, D))
    with pytest.raises(ValueError, match=r"\[B, 6\].*got \(5, 7\)"):
        model.encode(torch.rand(B, D))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"likelihood": "poisson"}, "likelihood must be one of"),
        ({"beta": -1.0}, "beta must be a finite number >= 0"),
        ({"free_bits": -0.1}, "free_bits"),
        ({"prior": "laplace"}, "prior must be"),
        ({"prior": (torch.zeros(L + 1), 0.0)}, "prior_mu must be a scalar or of shape"),
        ({"logvar_clamp": (2.0, -2.0)}, "logvar_clamp"),
    ],
)
def test_bad_vae_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _mlp_vae(**kwargs)


def test_bad_latent_dim_and_ae_loss_raise():
    with pytest.raises(ValueError, match="latent_dim must be a positive int"):
        vae_ext.VAE(nn.Linear(D, 2), nn.Linear(1, D), latent_dim=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        vae_ext.AE(nn.Linear(D, L), nn.Linear(L, D), loss="l1")
    model = _mlp_vae()
    with pytest.raises(ValueError, match="beta"):
        model.beta = -0.1
    model.beta = 0.3
    assert model.loss_fn.beta == 0.3


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"prior": ("zero", 0.0)}, "prior_mu"),
        ({"prior": (0.0, torch.zeros(L, dtype=torch.int64))}, "prior_logvar"),
        ({"obs_logvar": "wide", "likelihood": "gaussian"}, "obs_logvar"),
        ({"beta": torch.tensor(1.0)}, "beta"),
    ],
)
def test_vae_options_of_the_wrong_type_raise_type_error(kwargs, argument):
    with pytest.raises(TypeError, match=argument):
        _mlp_vae(**kwargs)


def test_extra_reprs_show_every_option():
    loss = vae_ext.ELBOLoss("gaussian", beta=0.5, obs_logvar=torch.zeros(3), learn_obs_logvar=True)
    assert repr(loss) == (
        "ELBOLoss(likelihood='gaussian', beta=0.5, free_bits=0.0, obs_logvar=tensor of shape (3,), "
        "learn_obs_logvar=True, reduction='mean')"
    )
    assert "loss='l2'" in repr(vae_ext.AE(nn.Identity(), nn.Identity(), loss="l2"))
