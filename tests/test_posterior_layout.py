"""ε and the KL are functions of the moment values only: the same values in any memory layout
(contiguous, channels_last, the strides AutoencoderKL gives with slicing / tiling, permuted and
gapped views) give the same sample bits for the same generator seed, the same KL bits and the
same gradients, for DiagonalGaussianDistribution and DiagonalGaussian."""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCES, tiny_autoencoder_kl
from torch.distributions import Normal, kl_divergence

import vae_ext
from vae_ext import reference
from vae_ext.distributions import DiagonalGaussian, DiagonalGaussianDistribution


def relayouts(t):
    """t's values in other memory layouts: {name: tensor equal to t}."""
    layouts = {"contiguous": t.contiguous()}
    if t.dim() == 4:
        layouts["channels_last"] = t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        layouts["channels_last_3d"] = t.contiguous(memory_format=torch.channels_last_3d)
    order = list(range(t.dim()))
    order[1:] = reversed(order[1:])  # (b, ..., h, c) innermost-first: another permuted layout
    layouts["permuted"] = t.permute(order).contiguous().permute([order.index(d) for d in range(t.dim())])
    gapped = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)[..., ::2]
    layouts["gapped"] = gapped.copy_(t)
    for name, u in layouts.items():
        assert torch.equal(u, t), name
    return layouts


def moments(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=gen, dtype=torch.float64)
    c = shape[1] // 2
    t[:, c:] = 0.8 * t[:, c:] - 0.3
    return t.to(dtype)


def results(make, params, seed):
    """(z, kl, grad of both) of one layout of params: every output's bits."""
    params = params.detach().requires_grad_(True)
    z, kl = make(params, seed)
    gen = torch.Generator().manual_seed(99)
    grads = torch.autograd.grad(
        (z, kl),
        params,
        (torch.randn(z.shape, generator=gen).to(z.dtype), torch.randn(kl.shape, generator=gen).to(kl.dtype)),
    )
    return z, kl, grads[0]


def diffusers_class(params, seed):
    posterior = DiagonalGaussianDistribution(params)
    return posterior.sample(generator=torch.Generator().manual_seed(seed)), posterior.kl()


def distribution(params, seed):
    q = DiagonalGaussian(*params.chunk(2, dim=1))
    return q.rsample(generator=torch.Generator().manual_seed(seed)), kl_divergence(q, Normal(0.0, 1.0))


# 4 and 16 channels (the KL once read 16 and more in place as rows of channels), H·W a
# multiple of 4 or not, and 5-d moments.
SHAPES = ((2, 8, 4, 4), (2, 32, 4, 4), (3, 8, 3, 5), (2, 8, 2, 3, 4))


@pytest.mark.parametrize(
    "make", (diffusers_class, distribution), ids=("DiagonalGaussianDistribution", "DiagonalGaussian")
)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float64), ids=str)
def test_sample_kl_and_gradients_do_not_depend_on_the_layout(api_backend, make, shape, dtype):
    if make is diffusers_class and len(shape) != 4:
        pytest.skip("diffusers' kl sums dims [1, 2, 3]: 4-d moments (5-d in tests/test_diffusers_dropin.py)")
    base = moments(shape, dtype)
    expected = results(make, base, seed=5)
    eps = reference.normals(int(vae_ext.draw_seed("cpu", torch.Generator().manual_seed(5))), base.numel() // 2)
    mu, logvar = base.double().chunk(2, dim=1)
    z = mu + eps.double().reshape(mu.shape) * torch.exp(0.5 * logvar)
    rtol, atol = TOLERANCES[dtype]  # ε in the logical [B, ...] order (docs/design.md section 4)
    torch.testing.assert_close(expected[0].double(), z, rtol=rtol, atol=atol * 4)
    for name, params in relayouts(base).items():
        for ours, theirs, what in zip(results(make, params, seed=5), expected, ("z", "kl", "grad")):
            assert torch.equal(ours, theirs), (name, what)


@pytest.mark.parametrize("mode", ("plain", "slicing", "tiling"))
def test_autoencoder_kl_moments_sample_as_their_contiguous_copy(mode):
    pytest.importorskip("diffusers", reason="diffusers is a test dependency")
    vae = tiny_autoencoder_kl(mode)  # tiles of 8 pixels under "tiling": a 12x12 image is tiled
    with torch.no_grad():
        params = vae.encode(torch.randn(2, 3, 12, 12)).latent_dist.parameters
    for other in relayouts(params).values():
        assert torch.equal(*(results(diffusers_class, t, seed=3)[0] for t in (params, other)))
        assert torch.equal(*(results(diffusers_class, t, seed=3)[1] for t in (params, other)))
