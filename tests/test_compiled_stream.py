"""Where compiled code takes ε's seed from (docs/design.md section 4), on every supported torch.

``draw_seed`` calls ``torch.randint(high, ())`` (``aten.randint.default``), which Inductor does
not replace with its own random stream (its patterns take rand, randn and ``randint.low``):
the seed is drawn from the default generator as in eager code. A graph whose only random op is
that draw therefore gives eager's seed, and so eager's ε, without ``fallback_random``. A graph
that also holds random ops Inductor does lower draws their seeds from the same default
generator first, which moves the seed's draw along: reproducible under ``torch.manual_seed``,
not eager's."""

from __future__ import annotations

import pytest
import torch

import vae_ext
from vae_ext import _ops

pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def _latent():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(8, 33, generator=gen), torch.randn(8, 33, generator=gen) * 0.3


def _twice(fn, *args):
    torch.manual_seed(0)
    first = fn(*args)
    second = fn(*args)
    return first, second


def test_compiled_seed_draw_is_eagers():
    mu, _ = _latent()
    eager = _twice(vae_ext.draw_seed, mu.device)
    compiled = _twice(torch.compile(vae_ext.draw_seed, fullgraph=True), mu.device)
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled))
    assert not torch.equal(*eager)  # two draws, two seeds


def test_compiled_z_is_eagers_without_fallback_random():
    mu, logvar = _latent()
    eager = _twice(vae_ext.reparameterize, mu, logvar)
    compiled = _twice(torch.compile(vae_ext.reparameterize, fullgraph=True), mu, logvar)
    # The compiled kernels give the same bits; the fallback compiled by Inductor fuses its float
    # operations (README, Limitations): the same seed, ε to about 1e-6.
    tol = 0 if _ops.ops is _ops.compiled else 1e-6
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


def _seed_after_noise(mu):
    noise = torch.randn(mu.shape)  # a random op Inductor lowers to its own stream
    return vae_ext.draw_seed(mu.device), noise


def test_a_graph_with_other_random_ops_is_reproducible():
    mu, _ = _latent()
    compiled = torch.compile(_seed_after_noise, fullgraph=True)
    (seed_a, noise_a), _ = _twice(compiled, mu)
    (seed_b, noise_b), _ = _twice(compiled, mu)
    assert torch.equal(seed_a, seed_b) and torch.equal(noise_a, noise_b)
