"""vae_ext.distributions.DiagonalGaussian against Independent(Normal) and torch's kl_divergence."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TOLERANCES, batch_sum, compute_dtype, f64, grad_like, latent, needs_compiled, randn
from torch.distributions import Independent, Normal, Uniform, kl_divergence

import vae_ext
from vae_ext import _ops, reference
from vae_ext.distributions import DiagonalGaussian

SHAPES = ((5,), (3, 7), (2, 3, 4, 5), (0, 3, 2))


def torch_peer(mu, logvar):
    """The same distribution in torch.distributions (float64 when given float64); unvalidated,
    as torch's support check fails on an empty batch."""
    return Independent(Normal(mu, torch.exp(0.5 * logvar), validate_args=False), mu.dim() - 1, validate_args=False)


def assert_sum_close(actual, expected, dtype, terms, rounded_in=None):
    """A value summing `terms` per-element values (log_prob, entropy, KL) against float64;
    `rounded_in`: a dtype some input went through first (a torch Normal's scale in half)."""
    rtol, atol = TOLERANCES[compute_dtype(dtype)] if dtype in (torch.float16, torch.bfloat16) else TOLERANCES[dtype]
    for rounding in (actual.dtype, rounded_in):  # the result in float32, an input in its dtype
        if rounding is not None and rounding != torch.float64:
            rtol, atol = max(rtol, TOLERANCES[rounding][0]), max(atol, TOLERANCES[rounding][1])
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * math.sqrt(max(terms, 1)))


def seed_of(generator_seed):
    """The Philox seed the functional API draws from Generator().manual_seed(generator_seed)."""
    return int(vae_ext.draw_seed("cpu", torch.Generator().manual_seed(generator_seed)))


def reference_normals(generator_seed, n):
    return reference.normals(seed_of(generator_seed), n).double()


def conv_halves(batch, channels, hw, dtype, seed=0, requires_grad=False):
    """mu, logvar as the two strided halves of a [B, 2C, H, W] encoder output."""
    h = randn((batch, 2 * channels, hw, hw), dtype, torch.Generator().manual_seed(seed))
    h[:, channels:] = h[:, channels:] * 0.7 - 0.3
    h.requires_grad_(requires_grad)
    mu, logvar = h.chunk(2, dim=1)
    return h, mu, logvar


@pytest.fixture
def compiled_api(monkeypatch):
    """The distributions on the compiled ops, whatever VAE_EXT_FORCE_FALLBACK says."""
    monkeypatch.setattr(_ops, "ops", _ops.compiled)


# --------------------------------------------------------------------------- the distribution


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_independent_normal(dtype, shape):
    mu, logvar = latent(shape, dtype)
    q = DiagonalGaussian(mu, logvar)
    peer = torch_peer(f64(mu), f64(logvar))
    assert q.batch_shape == peer.batch_shape == shape[:1] and q.event_shape == peer.event_shape
    assert q.mean is mu and q.mode is mu
    terms = math.prod(shape[1:])
    for ours, theirs in ((q.stddev, peer.stddev), (q.variance, peer.variance)):
        assert ours.dtype == dtype
        rtol, atol = TOLERANCES[dtype]
        torch.testing.assert_close(ours.double(), theirs, rtol=rtol, atol=atol)
    value = randn(shape, dtype, torch.Generator().manual_seed(5), scale=1.5)
    log_prob = q.log_prob(value)
    assert log_prob.shape == shape[:1] and log_prob.dtype == compute_dtype(dtype)
    # Normal's per-element values summed per sample: torch's Independent fails on an empty batch.
    assert_sum_close(log_prob, batch_sum(peer.base_dist.log_prob(f64(value))), dtype, terms)
    entropy = q.entropy()
    assert entropy.shape == shape[:1] and entropy.dtype == compute_dtype(dtype)
    assert_sum_close(entropy, batch_sum(peer.base_dist.entropy()), dtype, terms)
    assert q.support.event_dim == len(shape) - 1
    if value.numel():  # torch's independent constraint fails on empty values
        assert bool(q.support.check(value).all())


def test_log_prob_broadcasts_over_sample_shape():
    mu, logvar = latent((3, 4), torch.float64)
    q = DiagonalGaussian(mu, logvar)
    values = torch.randn(6, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(values), torch_peer(mu, logvar).log_prob(values))


def test_log_prob_and_entropy_gradcheck():
    mu, logvar = (t.requires_grad_(True) for t in latent((3, 2, 5), torch.float64))
    value = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda m, lv, v: DiagonalGaussian(m, lv).log_prob(v), (mu, logvar, value))
    torch.autograd.gradcheck(lambda lv: DiagonalGaussian(mu, lv).entropy(), (logvar,))


def test_rsample_uses_the_fused_sampler_on_strided_halves(api_backend, dtype):
    _, mu, logvar = conv_halves(3, 4, 5, dtype)
    z = DiagonalGaussian(mu, logvar).rsample(generator=torch.Generator().manual_seed(21))
    assert z.shape == mu.shape and z.dtype == dtype
    same = vae_ext.reparameterize(mu.contiguous(), logvar.contiguous(), generator=torch.Generator().manual_seed(21))
    assert torch.equal(z, same)
    eps = reference_normals(21, mu.numel()).reshape(mu.shape)
    expected = f64(mu) + eps * torch.exp(0.5 * f64(logvar))
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(z.double(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("sample_shape", ((1,), (4,), (2, 3)), ids=str)
def test_rsample_with_a_sample_shape_draws_independent_eps(api_backend, dtype, sample_shape):
    _, mu, logvar = conv_halves(3, 2, 3, dtype)
    q = DiagonalGaussian(mu, logvar)
    z = q.rsample(sample_shape, generator=torch.Generator().manual_seed(8))
    assert z.shape == torch.Size(sample_shape) + mu.shape and z.dtype == dtype
    n = math.prod(sample_shape)
    # Draw k is mu + eps_k·σ with eps_k the k-th block of mu.numel() normals of one seed.
    eps = reference_normals(8, n * mu.numel()).reshape(n, *mu.shape)
    expected = (f64(mu) + eps * torch.exp(0.5 * f64(logvar))).reshape(z.shape)
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(z.double(), expected, rtol=rtol, atol=atol)
    flat = z.reshape(n, -1)
    for i in range(n):
        for j in range(i):
            assert not torch.equal(flat[i], flat[j])


def test_rsample_gradients(api_backend, dtype):
    h, mu, logvar = conv_halves(2, 3, 4, dtype, requires_grad=True)
    z = DiagonalGaussian(mu, logvar).rsample((2,), generator=torch.Generator().manual_seed(3))
    grad_z = grad_like(z)
    (grad_h,) = torch.autograd.grad(z, h, grad_z)
    eps = reference_normals(3, 2 * mu.numel()).reshape(2, *mu.shape)
    gz = f64(grad_z)
    expected_mu = gz.sum(0)
    expected_logvar = (gz * eps * 0.5 * torch.exp(0.5 * f64(logvar))).sum(0)
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(grad_h.double(), torch.cat((expected_mu, expected_logvar), 1), rtol=rtol, atol=2 * atol)


def test_rsample_gradcheck(api_backend):
    h = torch.randn(3, 4, 2, 3, dtype=torch.float64, requires_grad=True)

    def draw(h):
        mu, logvar = h.chunk(2, dim=1)
        return DiagonalGaussian(mu, logvar).rsample((2,), generator=torch.Generator().manual_seed(4))

    torch.autograd.gradcheck(draw, (h,))


def test_sample_is_detached_and_fresh_each_call():
    mu, logvar = (t.requires_grad_(True) for t in latent((2, 6), torch.float32))
    q = DiagonalGaussian(mu, logvar)
    a, b = q.sample(), q.sample()
    assert not a.requires_grad and not torch.equal(a, b)
    torch.manual_seed(5)
    c = q.sample((3,))
    torch.manual_seed(5)
    assert torch.equal(c, q.sample((3,))) and c.shape == (3, 2, 6)


def test_samples_follow_the_distribution():
    mu = torch.tensor([[0.5, -2.0, 3.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -1.5, 1.2]], dtype=torch.float64)
    n = 20000
    draws = DiagonalGaussian(mu, logvar).sample((n,), generator=torch.Generator().manual_seed(0))[:, 0]
    std = torch.exp(0.5 * logvar[0])
    torch.testing.assert_close(draws.mean(0), mu[0], rtol=0, atol=(5 * std / math.sqrt(n)).max().item())
    torch.testing.assert_close(draws.std(0), std, rtol=5 * math.sqrt(2 / n), atol=0)


def test_empty_batch():
    mu, logvar = latent((0, 4, 3), torch.float32)
    q = DiagonalGaussian(mu, logvar)
    assert q.rsample().shape == (0, 4, 3) and q.rsample((2,)).shape == (2, 0, 4, 3)
    assert q.entropy().shape == (0,) and kl_divergence(q, q).shape == (0,)
    assert kl_divergence(q, Normal(0.0, 1.0)).shape == (0,)


def test_expand():
    mu, logvar = latent((1, 4), torch.float64)
    q = DiagonalGaussian(mu, logvar).expand((3,))
    assert q.batch_shape == (3,) and q.rsample().shape == (3, 4)
    torch.testing.assert_close(q.entropy(), torch_peer(mu, logvar).entropy().expand(3))
    wide = DiagonalGaussian(mu, logvar).expand((2, 3))  # any batch shape, as Independent(Normal)
    peer = torch_peer(mu, logvar).expand((2, 3))
    assert wide.batch_shape == peer.batch_shape == (2, 3) and wide.event_shape == (4,)
    assert wide.rsample().shape == (2, 3, 4) and wide.rsample((5,)).shape == (5, 2, 3, 4)
    torch.testing.assert_close(wide.entropy(), peer.entropy())
    value = torch.randn(2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(wide.log_prob(value), peer.log_prob(value))
    torch.testing.assert_close(kl_divergence(wide, Normal(0.0, 1.0)), kl_divergence(peer, torch_peer(0 * mu, 0 * mu)))
    nested = Independent(DiagonalGaussian(mu, logvar), 1).expand((2,))
    assert nested.batch_shape == (2,) and nested.event_shape == (1, 4)


def test_broadcasts_mu_and_logvar():
    mu = torch.randn(3, 4, dtype=torch.float64)
    q = DiagonalGaussian(mu, torch.zeros(4, dtype=torch.float64))
    assert q.logvar.shape == (3, 4)
    torch.testing.assert_close(kl_divergence(q, Normal(0.0, 1.0)), 0.5 * (mu * mu).sum(1))


def test_argument_errors():
    mu = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="mu must be a tensor"):
        DiagonalGaussian([0.0], mu)
    with pytest.raises(TypeError, match="logvar must be a floating-point tensor"):
        DiagonalGaussian(mu, torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="logvar must have mu's dtype"):
        DiagonalGaussian(mu, mu.double())
    with pytest.raises(ValueError, match="batch dimension"):
        DiagonalGaussian(torch.zeros(()), torch.zeros(()))
    with pytest.raises(RuntimeError):
        DiagonalGaussian(mu, torch.zeros(3, 2))  # shapes that do not broadcast


def test_validate_args_like_torch():
    mu = torch.tensor([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="mu"):
        DiagonalGaussian(mu, torch.zeros(1, 2), validate_args=True)
    with pytest.raises(ValueError):
        DiagonalGaussian(torch.zeros(1, 2), torch.zeros(1, 2), validate_args=True).log_prob(torch.zeros(1, 3))
    # Without validation NaN goes in and comes out.
    q = DiagonalGaussian(mu, torch.zeros(1, 2), validate_args=False)
    assert torch.isnan(q.rsample()[0, 1]) and not torch.isnan(q.rsample()[0, 0])
    assert torch.isnan(kl_divergence(q, Normal(0.0, 1.0))).all()


# --------------------------------------------------------------------------- kl_divergence


def prior_grads_close(grads, expected, dtype, terms):
    rtol, atol = TOLERANCES[dtype]
    for grad, exp in zip(grads, expected):
        assert grad.dtype == dtype
        torch.testing.assert_close(grad.double(), exp, rtol=rtol, atol=atol * max(terms, 1))


def torch_kl_and_grads(p_args, q_args, make_q, grad_kl):
    """torch's own kl_divergence in float64 and its gradients against all four tensors."""
    leaves = [f64(t).requires_grad_(True) for t in (*p_args, *q_args)]
    kl = kl_divergence(torch_peer(*leaves[:2]), make_q(*leaves[2:]))
    return kl, torch.autograd.grad(kl, leaves, f64(grad_kl).expand(kl.shape))


@pytest.mark.parametrize("batches", ((3, 3), (3, 1), (1, 3)), ids=("same", "q_batch_1", "p_batch_1"))
def test_kl_diagonal_diagonal(api_backend, dtype, batches):
    pb, qb = batches
    event = (2, 3, 4)
    p_args = [t.requires_grad_(True) for t in latent((pb, *event), dtype, seed=1)]
    q_args = [t.requires_grad_(True) for t in latent((qb, *event), dtype, seed=2)]
    kl = kl_divergence(DiagonalGaussian(*p_args), DiagonalGaussian(*q_args))
    assert kl.shape == (max(pb, qb),) and kl.dtype == compute_dtype(dtype)
    grad_kl = randn(kl.shape, torch.float64, torch.Generator().manual_seed(9), shift=0.5)
    expected, expected_grads = torch_kl_and_grads(p_args, q_args, torch_peer, grad_kl)
    assert_sum_close(kl, expected, dtype, math.prod(event))
    grads = torch.autograd.grad(kl, [*p_args, *q_args], grad_kl.to(dtype))
    prior_grads_close(grads, expected_grads, dtype, max(pb, qb))


def q_independent(kind):
    def make(loc, logvar):
        scale = torch.exp(0.5 * logvar)
        if kind == "batch_none":
            return Independent(Normal(loc[0], scale[0]), loc.dim() - 1)
        return Independent(Normal(loc, scale), loc.dim() - 1)

    return make


@pytest.mark.parametrize("kind", ("batch_none", "batch_1", "batch_full"))
def test_kl_to_independent_normal_with_learnable_prior(api_backend, dtype, kind):
    event = (3, 5)
    p_args = [t.requires_grad_(True) for t in latent((4, *event), dtype, seed=3)]
    q_batch = 4 if kind == "batch_full" else 1
    q_args = [t.requires_grad_(True) for t in latent((q_batch, *event), dtype, seed=4)]
    make_q = q_independent(kind)
    kl = kl_divergence(DiagonalGaussian(*p_args), make_q(*q_args))
    assert kl.shape == (4,) and kl.dtype == compute_dtype(dtype)
    grad_kl = randn((4,), torch.float64, torch.Generator().manual_seed(10), shift=0.5)
    expected, expected_grads = torch_kl_and_grads(p_args, q_args, make_q, grad_kl)
    assert_sum_close(kl, expected, dtype, math.prod(event), rounded_in=dtype)  # q's scale in dtype
    grads = torch.autograd.grad(kl, [*p_args, *q_args], grad_kl.to(dtype))
    prior_grads_close(grads, expected_grads, dtype, 4)


@pytest.mark.parametrize("kind", ("scalar", "float", "per_latent", "full", "expanded"))
def test_kl_to_plain_normal(api_backend, kind):
    mu, logvar = latent((3, 4, 2), torch.float64, seed=5)
    gen = torch.Generator().manual_seed(6)
    shapes = {"scalar": (), "per_latent": (4, 2), "full": (3, 4, 2), "expanded": (1, 2)}
    if kind == "float":
        q = Normal(0.25, 1.5)
    else:
        loc, scale = torch.randn(shapes[kind], generator=gen, dtype=torch.float64), torch.rand(()) + 0.5
        q = Normal(loc, scale.double())
    kl = kl_divergence(DiagonalGaussian(mu, logvar), q)
    full_q = Normal(q.loc.expand(mu.shape), q.scale.expand(mu.shape))
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), full_q).sum((1, 2))
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-12)


def test_kl_to_standard_normal_matches_the_functional_api(api_backend, dtype):
    _, mu, logvar = conv_halves(3, 4, 3, dtype)
    kl = kl_divergence(DiagonalGaussian(mu, logvar), Normal(0.0, 1.0))
    assert torch.equal(kl, vae_ext.gaussian_kl(mu, logvar, reduction="none"))  # compute dtype, same bits


def test_kl_gradcheck_with_learnable_priors(api_backend):
    h = torch.randn(3, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    loc = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    log_scale = (0.3 * torch.randn(2, 2, 3, dtype=torch.float64)).requires_grad_(True)

    def kl(h, loc, log_scale):
        mu, logvar = h.chunk(2, dim=1)
        return kl_divergence(DiagonalGaussian(mu, logvar), Independent(Normal(loc, log_scale.exp()), 3))

    torch.autograd.gradcheck(kl, (h, loc, log_scale))


def test_kl_independent_to_diagonal(dtype):
    p_args = latent((3, 2, 4), dtype, seed=7)
    q_args = latent((3, 2, 4), dtype, seed=8)
    kl = kl_divergence(torch_peer(*p_args), DiagonalGaussian(*q_args))
    expected = kl_divergence(torch_peer(*map(f64, p_args)), torch_peer(*map(f64, q_args)))
    assert kl.dtype == compute_dtype(dtype)
    assert_sum_close(kl, expected, dtype, 8, rounded_in=dtype)  # p's scale in dtype


def test_kl_shape_errors():
    q = DiagonalGaussian(*latent((3, 4), torch.float32))
    with pytest.raises(ValueError, match="event shapes"):
        kl_divergence(q, DiagonalGaussian(*latent((3, 5), torch.float32)))
    with pytest.raises(ValueError, match="does not broadcast to the DiagonalGaussian's event shape"):
        kl_divergence(DiagonalGaussian(*latent((3, 1), torch.float32)), Normal(torch.zeros(4), 1.0))
    with pytest.raises(ValueError, match="do not broadcast"):
        kl_divergence(q, Normal(torch.zeros(5), 1.0))
    with pytest.raises(ValueError, match="does not match"):
        kl_divergence(q, Independent(Normal(torch.zeros(3, 4), 1.0), 2))
    with pytest.raises(NotImplementedError):
        kl_divergence(q, Independent(Uniform(torch.zeros(3, 4), torch.ones(3, 4)), 1))


@needs_compiled
def test_kl_and_rsample_read_strided_halves_in_place(compiled_api):
    """No copy of the latent: the halves of a [B, 2C, H, W] encoder output go to the ops as they are."""
    _, mu, logvar = conv_halves(4, 4, 8, torch.float32)
    q = DiagonalGaussian(mu, logvar, validate_args=False)
    prior = DiagonalGaussian(*latent(mu.shape, torch.float32, seed=3), validate_args=False)
    standard = Normal(0.0, 1.0)
    with torch.profiler.profile(record_shapes=True) as prof:
        q.rsample()
        kl_divergence(q, prior)
        kl_divergence(q, standard)
    copies = {"aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy"}
    sizes = {math.prod(shape) for event in prof.events() if event.name in copies for shape in event.input_shapes}
    assert max(sizes, default=0) <= 1, sizes  # scalars only (the standard prior's)


# --------------------------------------------------------------------------- torch.compile


@needs_compiled
def test_compile_fullgraph_kl(compiled_api):
    h = torch.randn(2, 8, 3, 3, requires_grad=True)
    prior_loc = torch.zeros(4, 3, 3, requires_grad=True)

    def kl(h, loc):
        mu, logvar = h.chunk(2, dim=1)
        return kl_divergence(DiagonalGaussian(mu, logvar, validate_args=False), Independent(Normal(loc, 1.0), 3))

    torch._dynamo.reset()
    compiled = torch.compile(kl, fullgraph=True)(h, prior_loc)
    eager = kl(h, prior_loc)
    torch.testing.assert_close(compiled, eager)
    grads = torch.autograd.grad(compiled.sum(), (h, prior_loc))
    for grad, expected in zip(grads, torch.autograd.grad(eager.sum(), (h, prior_loc))):
        torch.testing.assert_close(grad, expected)


@needs_compiled
@torch._inductor.config.patch(fallback_random=True)  # the compiled seed draw is eager's
def test_compile_rsample(compiled_api):
    h = torch.randn(2, 8, 3, 3, requires_grad=True)

    def draw(h):
        mu, logvar = h.chunk(2, dim=1)
        return DiagonalGaussian(mu, logvar, validate_args=False).rsample((2,))

    torch._dynamo.reset()
    torch.manual_seed(0)
    compiled = torch.compile(draw, fullgraph=True)(h)
    torch.manual_seed(0)
    torch.testing.assert_close(compiled, draw(h))
    assert compiled.shape == (2, 2, 4, 3, 3)
