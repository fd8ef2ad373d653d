"""DiagonalGaussian with a batch shape of any rank (event_dims), as Independent(Normal(...), k):
shapes, values and gradients in float64, expand, constraints and validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Distribution, Independent, Normal, constraints, kl_divergence

import vae_ext
from vae_ext import reference
from vae_ext.distributions import DiagonalGaussian

# (shape, event_dims): batch (), (2,), (2, 3), (2, 1, 3) and event (), (5,), (4, 5).
CASES = (((5,), 1), ((2, 5), 1), ((2, 3, 5), 1), ((2, 3, 4, 5), 2), ((2, 1, 3, 5), 1), ((2, 3), 0), ((0, 3, 5), 1))


def params(shape, seed=0, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=gen, dtype=torch.float64)
    logvar = 0.8 * torch.randn(shape, generator=gen, dtype=torch.float64) - 0.3
    return mu.requires_grad_(requires_grad), logvar.requires_grad_(requires_grad)


def peer(mu, logvar, k):
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), k, validate_args=False)


def assert_values_and_grads(ours, theirs, leaves):
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    if not ours.numel():
        return
    grad = torch.randn(ours.shape, dtype=ours.dtype, generator=torch.Generator().manual_seed(9)) + 0.5
    grads = torch.autograd.grad(ours, leaves, grad, retain_graph=True)
    for g, e in zip(grads, torch.autograd.grad(theirs, leaves, grad, retain_graph=True)):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape,k", CASES, ids=str)
def test_matches_independent_normal(api_backend, shape, k):
    mu, logvar = params(shape)
    q, p = DiagonalGaussian(mu, logvar, event_dims=k), peer(mu, logvar, k)
    assert q.batch_shape == p.batch_shape and q.event_shape == p.event_shape
    value = torch.randn((3, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if not mu.numel():  # torch's Independent cannot sum an empty batch: shapes only
        assert q.log_prob(value).shape == (3, *q.batch_shape) and q.entropy().shape == q.batch_shape
        assert kl_divergence(q, Normal(0.0, 1.0)).shape == kl_divergence(q, q).shape == q.batch_shape
        return
    assert_values_and_grads(q.log_prob(value), p.log_prob(value), (mu, logvar))
    assert_values_and_grads(
        q.entropy(), p.base_dist.entropy().sum(tuple(range(-k, 0))) if k else p.entropy(), (logvar,)
    )
    prior_mu, prior_logvar = params(shape[len(shape) - k :], seed=2)  # a learnable prior over the event
    prior = Normal(prior_mu, torch.exp(0.5 * prior_logvar))
    prior = Independent(prior, k) if k else prior
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), prior.base_dist if k else prior)
    expected = expected.sum(tuple(range(-k, 0))) if k else expected
    assert_values_and_grads(kl_divergence(q, prior), expected, (mu, logvar, prior_mu, prior_logvar))
    other_mu, other_logvar = params(shape, seed=3)
    other = DiagonalGaussian(other_mu, other_logvar, event_dims=k)
    expected = kl_divergence(p.base_dist, peer(other_mu, other_logvar, k).base_dist)
    expected = expected.sum(tuple(range(-k, 0))) if k else expected
    assert_values_and_grads(kl_divergence(q, other), expected, (mu, logvar, other_mu, other_logvar))
    if k:  # Independent(Normal) against a DiagonalGaussian
        p_other = peer(other_mu, other_logvar, k)
        expected = kl_divergence(p_other.base_dist, p.base_dist).sum(tuple(range(-k, 0)))
        assert_values_and_grads(kl_divergence(p_other, q), expected, (mu, logvar, other_mu, other_logvar))


@pytest.mark.parametrize("shape,k", CASES, ids=str)
def test_rsample_runs_the_batch_as_rows(api_backend, shape, k):
    mu, logvar = params(shape)
    q = DiagonalGaussian(mu, logvar, event_dims=k)
    z = q.rsample(generator=torch.Generator().manual_seed(4))
    seed = int(vae_ext.draw_seed("cpu", torch.Generator().manual_seed(4)))
    eps = reference.normals(seed, mu.numel()).double().reshape(shape)  # the logical order
    assert_values_and_grads(z, mu + eps * torch.exp(0.5 * logvar), (mu, logvar))
    assert q.rsample((2, 3)).shape == (2, 3, *shape)


def test_default_event_dims_is_one_batch_dimension():
    mu, logvar = params((2, 3, 4), requires_grad=False)
    assert DiagonalGaussian(mu, logvar).batch_shape == (2,)
    assert DiagonalGaussian(mu, logvar, event_dims=2).batch_shape == (2,)
    assert DiagonalGaussian(mu, logvar, event_dims=1).batch_shape == (2, 3)
    assert DiagonalGaussian(mu[0, 0, 0], logvar[0, 0, 0], event_dims=0).batch_shape == ()


def test_event_dims_errors():
    mu, logvar = params((2, 3), requires_grad=False)
    with pytest.raises(ValueError, match=r"event_dims must be in \[0, mu.dim\(\)\] = \[0, 2\], got 3"):
        DiagonalGaussian(mu, logvar, event_dims=3)
    with pytest.raises(ValueError, match="event_dims must be in"):
        DiagonalGaussian(mu, logvar, event_dims=-1)
    with pytest.raises(TypeError, match="event_dims must be None or an int, got float"):
        DiagonalGaussian(mu, logvar, event_dims=1.0)
    with pytest.raises(TypeError, match="event_dims must be None or an int, got bool"):
        DiagonalGaussian(mu, logvar, event_dims=True)


@pytest.mark.parametrize("batch_shape", ((4,), (2, 4), (3, 2, 4)), ids=str)
def test_expand_to_any_batch_shape(batch_shape):
    mu, logvar = params((4, 3), requires_grad=False)
    q, p = DiagonalGaussian(mu, logvar).expand(batch_shape), peer(mu, logvar, 1).expand(batch_shape)
    assert q.batch_shape == p.batch_shape and q.event_shape == p.event_shape
    value = torch.randn((*batch_shape, 3), dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(value), p.log_prob(value))
    torch.testing.assert_close(q.entropy(), p.entropy())
    torch.testing.assert_close(kl_divergence(q, Normal(0.0, 1.0)), kl_divergence(p, peer(0 * mu, 0 * mu, 1)))
    assert q.rsample().shape == (*batch_shape, 3)
    nested = Independent(DiagonalGaussian(mu, logvar), 1).expand(batch_shape[:-1])
    assert nested.batch_shape == batch_shape[:-1] and nested.event_shape == (4, 3)


def test_constraints_have_the_event_dim():
    mu, logvar = params((2, 3, 4), requires_grad=False)
    q = DiagonalGaussian(mu, logvar, event_dims=1)
    assert q.support.event_dim == 1 and q.arg_constraints["mu"].event_dim == 1
    assert q.arg_constraints["logvar"].event_dim == 1
    assert q.support.check(mu).shape == q.batch_shape
    # Parameter shapes inferred from the constraints broadcast to batch_shape (torch's tests do so).
    for name, constraint in q.arg_constraints.items():
        shape = getattr(q, name).shape
        assert shape[: len(shape) - constraint.event_dim] == q.batch_shape
    with pytest.raises(NotImplementedError, match="statically"):  # the class's, as Independent's
        DiagonalGaussian.support.event_dim  # noqa: B018
    assert constraints.is_dependent(DiagonalGaussian.support)


@pytest.mark.parametrize("bad", (-math.inf, math.nan))
def test_validation_rejects_a_logvar_of_minus_inf_or_nan(bad, monkeypatch):
    # torch's default (the first torch.compile in a process turns it off for every distribution)
    monkeypatch.setattr(Distribution, "_validate_args", True)
    mu, logvar = params((2, 3), requires_grad=False)
    logvar = logvar.clone()
    logvar[1, 2] = bad
    with pytest.raises(ValueError, match="logvar"):
        DiagonalGaussian(mu, logvar)  # validation is on by default, as torch's
    with pytest.raises(ValueError, match="scale"):  # Normal rejects sigma = 0 the same way
        Normal(mu, torch.exp(0.5 * logvar))
    q = DiagonalGaussian(mu, logvar, validate_args=False)
    assert torch.isnan(q.log_prob(mu)[1]) and not torch.isnan(q.log_prob(mu)[0])
    assert DiagonalGaussian(mu, torch.full_like(mu, math.inf)).batch_shape == (2,)  # sigma = inf, as Normal
