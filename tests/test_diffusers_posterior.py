"""DiagonalGaussianDistribution against diffusers' own class and a real AutoencoderKL's posterior."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TOLERANCES, compute_dtype, dtype_id, needs_compiled, randn, tiny_autoencoder_kl
from torch.distributions import Normal, kl_divergence

import vae_ext
from vae_ext import _ops, reference
from vae_ext.distributions import LOGVAR_MAX, LOGVAR_MIN, DiagonalGaussianDistribution

diffusers = pytest.importorskip("diffusers", reason="diffusers is a test dependency (.ci/run installs it)")
from diffusers.models.autoencoders import autoencoder_kl  # noqa: E402
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution as DiffusersPosterior  # noqa: E402

LAYOUTS = (torch.contiguous_format, torch.channels_last)


def layout_id(layout):
    return "channels_last" if layout == torch.channels_last else "contiguous"


def moments(shape, dtype, seed=0, layout=torch.contiguous_format, extremes=False):
    """Encoder moments [B, 2C, H, W] (mean, logvar); with extremes, logvar hits and crosses the
    clamp bounds [-30, 20] (float16 cannot hold e^20: keep those for wider types)."""
    b, c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn((b, 2 * c, h, w), generator=gen, dtype=torch.float64)
    t[:, c:] = 0.8 * t[:, c:] - 0.3
    if extremes:
        flat = t[:, c:].reshape(-1)
        values = torch.tensor([LOGVAR_MIN - 12.0, LOGVAR_MIN, LOGVAR_MAX, LOGVAR_MAX + 5.0, -29.0, 19.0])
        idx = torch.randperm(flat.numel(), generator=gen)[: len(values)]
        logvar = t[:, c:].clone().reshape(-1)
        logvar[idx] = values.double()
        t[:, c:] = logvar.reshape(b, c, h, w)
    return t.to(dtype).contiguous(memory_format=layout)


def seed_of(generator_seed):
    return int(vae_ext.draw_seed("cpu", torch.Generator().manual_seed(generator_seed)))


def sample_eps(generator_seed, like):
    """The ε our sample draws for `like` [B, C, ...]: the op's ε in the logical order, whatever
    the layout of the moments (docs/design.md section 4)."""
    return reference.normals(seed_of(generator_seed), like.numel()).double().reshape(like.shape)


def tol(dtype, terms=1):
    rtol, atol = TOLERANCES[dtype]
    if dtype in (torch.float16, torch.bfloat16):  # computed in float32, rounded once to dtype
        rtol, atol = max(rtol, TOLERANCES[compute_dtype(dtype)][0]), max(atol, TOLERANCES[compute_dtype(dtype)][1])
    return {"rtol": rtol, "atol": atol * math.sqrt(terms)}


def diffusers_grad(make_output, params, grad):
    """Gradient of diffusers' float64 computation on the same (rounded) parameters."""
    leaf = params.detach().double().requires_grad_(True)
    out = make_output(leaf)
    (g,) = torch.autograd.grad(out, leaf, grad.double())
    return out.detach(), g


# --------------------------------------------------------------------------- attributes


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_attributes_are_diffusers(layout):
    params = moments((2, 3, 4, 5), torch.float32, layout=layout, extremes=True)
    ours, theirs = DiagonalGaussianDistribution(params), DiffusersPosterior(params)
    assert ours.parameters is params and ours.deterministic is False
    assert ours.mean.data_ptr() == theirs.mean.data_ptr() and ours.mean.stride() == theirs.mean.stride()
    for name in ("logvar", "std", "var"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    assert ours.logvar.min() >= LOGVAR_MIN and ours.logvar.max() <= LOGVAR_MAX
    assert ours.mode() is ours.mean


def test_deterministic_is_diffusers():
    params = moments((2, 2, 3, 3), torch.float64)
    ours, theirs = DiagonalGaussianDistribution(params, deterministic=True), DiffusersPosterior(params, True)
    for name in ("std", "var"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)) and not getattr(ours, name).any()
    assert torch.equal(ours.sample(), theirs.sample()) and torch.equal(ours.sample(), ours.mean)
    for ours_value, their_value in ((ours.kl(), theirs.kl()), (ours.nll(params[:, :2]), theirs.nll(params[:, :2]))):
        assert torch.equal(ours_value, their_value) and ours_value.dtype == their_value.dtype


def test_attributes_can_be_assigned_like_diffusers():
    ours = DiagonalGaussianDistribution(moments((1, 2, 2, 2), torch.float64))
    ours.logvar = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    assert torch.equal(ours.std, torch.ones(1, 2, 2, 2, dtype=torch.float64))
    torch.testing.assert_close(ours.kl(), 0.5 * (ours.mean**2).sum((1, 2, 3)))


# --------------------------------------------------------------------------- kl


# 4 channels as Stable Diffusion's VAE, 16 as SD3's / Flux's.
KL_SHAPES = ((3, 4, 5, 7), (3, 16, 2, 3))


@pytest.mark.parametrize("shape", KL_SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32, torch.float16, torch.bfloat16), ids=dtype_id)
def test_kl_matches_diffusers(dtype, layout, shape):
    params = moments(shape, dtype, layout=layout, extremes=dtype != torch.float16).requires_grad_(True)
    kl = DiagonalGaussianDistribution(params).kl()
    assert kl.shape == (3,) and kl.dtype == compute_dtype(dtype)  # diffusers: dtype, which can overflow
    grad_kl = randn((3,), dtype, torch.Generator().manual_seed(4), shift=0.5)
    expected, expected_grad = diffusers_grad(lambda p: DiffusersPosterior(p).kl(), params, grad_kl)
    c = shape[1]
    terms = math.prod(shape[1:])
    torch.testing.assert_close(kl.detach().double(), expected, **tol(dtype, terms))
    (grad,) = torch.autograd.grad(kl, params, grad_kl)
    assert grad.dtype == dtype
    torch.testing.assert_close(grad.double(), expected_grad, **tol(dtype))
    clamped = (params[:, c:] < LOGVAR_MIN) | (params[:, c:] > LOGVAR_MAX)
    assert not grad[:, c:][clamped].any()  # the clamp's gradient: zero outside [-30, 20]
    assert clamped.any() == (dtype != torch.float16)


@pytest.mark.parametrize("shape", KL_SHAPES, ids=str)
@pytest.mark.parametrize("other_class", (DiagonalGaussianDistribution, DiffusersPosterior), ids=("ours", "diffusers"))
@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_kl_to_another_posterior_matches_diffusers(layout, other_class, shape):
    params = moments(shape, torch.float64, seed=1, layout=layout, extremes=True).requires_grad_(True)
    other = moments(shape, torch.float64, seed=2, layout=layout).requires_grad_(True)
    kl = DiagonalGaussianDistribution(params).kl(other_class(other))
    expected = DiffusersPosterior(params).kl(DiffusersPosterior(other))
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-10)
    grad_kl = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float64)
    grads = torch.autograd.grad(kl, (params, other), grad_kl)
    expected_grads = torch.autograd.grad(expected, (params, other), grad_kl)
    for grad, exp in zip(grads, expected_grads):
        torch.testing.assert_close(grad, exp, rtol=1e-10, atol=1e-12)


def test_kl_to_a_deterministic_posterior_is_diffusers():
    params, other = moments((2, 2, 3, 3), torch.float64, 1), moments((2, 2, 3, 3), torch.float64, 2)
    ours = DiagonalGaussianDistribution(params).kl(DiagonalGaussianDistribution(other, deterministic=True))
    theirs = DiffusersPosterior(params).kl(DiffusersPosterior(other, deterministic=True))
    assert torch.equal(ours, theirs)  # inf / nan where diffusers divides by var = 0


@pytest.mark.parametrize("shape", ((2, 6, 3, 4, 5), (2, 6, 3)), ids=("5d", "3d"))
def test_kl_of_other_ranks_sums_dims_1_2_3_as_diffusers(shape):
    params = torch.randn(shape, dtype=torch.float64)
    if len(shape) == 3:  # diffusers' sum over dims [1, 2, 3] fails: so does ours
        with pytest.raises(IndexError):
            DiffusersPosterior(params).kl()
        with pytest.raises(IndexError):
            DiagonalGaussianDistribution(params).kl()
        return
    torch.testing.assert_close(DiagonalGaussianDistribution(params).kl(), DiffusersPosterior(params).kl())


def test_kl_matches_the_distributions_api():
    params = moments((2, 3, 4, 4), torch.float64, layout=torch.channels_last)
    posterior = DiagonalGaussianDistribution(params)
    torch.testing.assert_close(kl_divergence(posterior.as_distribution(), Normal(0.0, 1.0)), posterior.kl())


# --------------------------------------------------------------------------- sample


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32, torch.float16, torch.bfloat16), ids=dtype_id)
def test_sample_is_mean_plus_std_eps_with_diffusers_gradients(dtype, layout):
    shape = (2, 4, 3, 5)
    params = moments(shape, dtype, layout=layout, extremes=dtype != torch.float16).requires_grad_(True)
    z = DiagonalGaussianDistribution(params).sample(generator=torch.Generator().manual_seed(17))
    assert z.shape == shape and z.dtype == dtype
    eps = sample_eps(17, z)
    grad_z = randn(shape, dtype, torch.Generator().manual_seed(5), shift=0.25)

    def theirs(p):  # diffusers' sample with our ε in place of its randn_tensor draw
        posterior = DiffusersPosterior(p)
        return posterior.mean + posterior.std * eps

    expected, expected_grad = diffusers_grad(theirs, params, grad_z)
    torch.testing.assert_close(z.detach().double(), expected, **tol(dtype))
    (grad,) = torch.autograd.grad(z, params, grad_z)
    rtol, atol = tol(dtype).values()
    torch.testing.assert_close(grad.double(), expected_grad, rtol=rtol, atol=atol * 4)


def test_sample_statistics_match_diffusers():
    params = moments((16, 4, 16, 16), torch.float64, layout=torch.channels_last)
    ours, theirs = DiagonalGaussianDistribution(params), DiffusersPosterior(params)
    n = ours.mean.numel()
    for posterior in (ours, theirs):
        eps = ((posterior.sample() - posterior.mean) / posterior.std).flatten()
        assert abs(eps.mean().item()) < 5 / math.sqrt(n)
        assert abs(eps.std().item() - 1) < 5 * math.sqrt(0.5 / n)


def test_sample_follows_the_generator():
    posterior = DiagonalGaussianDistribution(moments((2, 2, 3, 3), torch.float32))
    a = posterior.sample(generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, posterior.sample(generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(a, posterior.sample(generator=torch.Generator().manual_seed(4)))
    torch.manual_seed(0)
    b = posterior.sample()
    torch.manual_seed(0)
    assert torch.equal(b, posterior.sample())


def test_sample_with_a_list_of_generators_seeds_each_row():
    params = moments((3, 2, 3, 3), torch.float32)
    z = DiagonalGaussianDistribution(params).sample(generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    for row, seed in enumerate((1, 2, 3)):
        alone = DiagonalGaussianDistribution(params[row : row + 1]).sample(
            generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(z[row : row + 1], alone)
    with pytest.raises(ValueError, match="a list of 2 generators for a batch of 3"):
        DiagonalGaussianDistribution(params).sample(generator=[torch.Generator(), torch.Generator()])


@needs_compiled
def test_sample_and_kl_read_contiguous_halves_in_place(monkeypatch):
    """Contiguous moments go to the ops without a copy: only the logvar clamp (diffusers' own
    copy). (channels_last ones are copied into the logical order: docs/distributions.md.)"""
    monkeypatch.setattr(_ops, "ops", _ops.compiled)
    for layout in (torch.contiguous_format,):
        params = moments((2, 16, 4, 4), torch.float32, layout=layout).requires_grad_(True)
        with torch.profiler.profile(record_shapes=True) as prof:
            posterior = DiagonalGaussianDistribution(params)
            z, kl = posterior.sample(), posterior.kl()
            torch.autograd.grad((z, kl), params, (torch.randn_like(z), torch.ones_like(kl)))
        copies = {"aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy"}
        latent_size = params.numel() // 2
        sizes = [math.prod(s) for e in prof.events() if e.name in copies for s in e.input_shapes if s]
        assert max(sizes, default=0) < latent_size, (layout, sizes)


# --------------------------------------------------------------------------- nll


@pytest.mark.parametrize("dims", ((1, 2, 3), [1, 2], (2,)), ids=str)
def test_nll_matches_diffusers(dims):
    params = moments((2, 3, 4, 4), torch.float64, extremes=True).requires_grad_(True)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    nll = DiagonalGaussianDistribution(params).nll(x, dims=dims)
    expected = DiffusersPosterior(params).nll(x, dims=list(dims))
    torch.testing.assert_close(nll, expected, rtol=1e-13, atol=1e-12)
    grad = torch.randn(nll.shape, dtype=torch.float64)
    for ours, theirs in zip(
        torch.autograd.grad(nll, (params, x), grad), torch.autograd.grad(expected, (params, x), grad)
    ):
        torch.testing.assert_close(ours, theirs)


# --------------------------------------------------------------------------- a real AutoencoderKL


def small_autoencoder_kl():
    return tiny_autoencoder_kl(sample_size=16).double()


def vae_loss(vae, x, posterior, z):
    x_hat = vae.decode(z).sample
    return torch.nn.functional.mse_loss(x_hat, x) + 1e-3 * posterior.kl().mean()


def test_autoencoder_kl_training_loss_and_gradients_match_diffusers():
    vae = small_autoencoder_kl()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    posterior = vae.encode(x).latent_dist
    assert isinstance(posterior, DiffusersPosterior)
    ours = DiagonalGaussianDistribution.from_posterior(posterior)
    z = ours.sample(generator=torch.Generator().manual_seed(23))
    eps = sample_eps(23, z)
    loss = vae_loss(vae, x, ours, z)
    grads = torch.autograd.grad(loss, list(vae.parameters()))

    posterior = vae.encode(x).latent_dist  # a fresh graph for diffusers' loss
    expected = vae_loss(vae, x, posterior, posterior.mean + posterior.std * eps)
    expected_grads = torch.autograd.grad(expected, list(vae.parameters()))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    for grad, exp in zip(grads, expected_grads):
        torch.testing.assert_close(grad, exp, rtol=1e-9, atol=1e-12)


def test_autoencoder_kl_moments_are_channels_last():
    """Why the channels_last path matters: diffusers' encoder hands its attention block's
    channels_last layout on to conv_out and quant_conv (checked so the test above covers it)."""
    vae = small_autoencoder_kl()
    params = vae.encode(torch.randn(2, 3, 16, 16, dtype=torch.float64)).latent_dist.parameters
    assert params.is_contiguous(memory_format=torch.channels_last) and not params.is_contiguous()


def test_swapping_the_class_into_autoencoder_kl(monkeypatch):
    monkeypatch.setattr(autoencoder_kl, "DiagonalGaussianDistribution", DiagonalGaussianDistribution)
    vae = small_autoencoder_kl()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    posterior = vae.encode(x).latent_dist
    assert isinstance(posterior, DiagonalGaussianDistribution)
    out = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(0)).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out, vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(0)).sample)


def test_compile_fullgraph_kl():
    params = moments((2, 4, 3, 3), torch.float32, layout=torch.channels_last).requires_grad_(True)

    def kl(p):
        return DiagonalGaussianDistribution(p).kl()

    torch._dynamo.reset()
    compiled = torch.compile(kl, fullgraph=True)(params)
    torch.testing.assert_close(compiled, kl(params))
    grad = torch.autograd.grad(compiled.sum(), params)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(kl(params).sum(), params)[0])
