"""The diffusers drop-in as a diffusers user meets it: vae_ext's DiagonalGaussianDistribution
swapped into every diffusers module that holds diffusers' class, a small real AutoencoderKL
(and a 3-d AutoencoderKLWan for 5-d moments) built from a config, encode -> sample / kl / nll /
mode with slicing and tiling on and off, posterior stats read under no_grad before the loss;
values and gradients against diffusers' own class fed with our ε."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import tiny_autoencoder_kl

import vae_ext
from vae_ext import reference
from vae_ext.distributions import DiagonalGaussianDistribution

diffusers = pytest.importorskip("diffusers", reason="diffusers is a test dependency (.ci/run installs it)")
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution as DiffusersPosterior  # noqa: E402

SEED = 21


@pytest.fixture
def swapped(monkeypatch):
    """Our class in place of diffusers' in every loaded diffusers module that holds it."""
    holders = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("diffusers") and getattr(module, "DiagonalGaussianDistribution", None) is DiffusersPosterior
    ]
    assert len(holders) > 20  # autoencoder_kl, _wan, _cogvideox, _ltx, _mochi, ... and vae itself
    for module in holders:
        monkeypatch.setattr(module, "DiagonalGaussianDistribution", DiagonalGaussianDistribution)
    return holders


def autoencoder_kl(mode):
    # 8-pixel tiles under "tiling": the 12x12 image below is encoded in overlapping tiles
    return tiny_autoencoder_kl(mode), torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def autoencoder_kl_wan(mode):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(
        base_dim=4, z_dim=4, dim_mult=[1, 1], num_res_blocks=1, temperal_downsample=[False], attn_scales=[]
    )
    return vae, torch.randn(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # moments [2, 8, 1, 4, 4]


def our_eps(like):
    seed = int(vae_ext.draw_seed("cpu", torch.Generator().manual_seed(SEED)))
    return reference.normals(seed, like.numel()).reshape(like.shape)


def outputs(posterior, z_for_nll, eps=None):
    """sample / kl / nll / mode of a posterior: ours through sample(generator), diffusers' as
    mean + std·ε with our ε."""
    if eps is None:
        sample = posterior.sample(generator=torch.Generator().manual_seed(SEED))
    else:
        sample = posterior.mean + posterior.std * eps.to(posterior.mean.dtype)
    return {"sample": sample, "kl": posterior.kl(), "nll": posterior.nll(z_for_nll), "mode": posterior.mode()}


def weighted(outs):
    gen = torch.Generator().manual_seed(3)
    return sum((out.float() * torch.randn(out.shape, generator=gen)).sum() for out in outs.values())


CASES = [("kl", mode) for mode in ("plain", "slicing", "tiling")] + [("wan", "plain")]
MAKERS = {"kl": autoencoder_kl, "wan": autoencoder_kl_wan}


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("kind,mode", CASES, ids=[f"{k}-{m}" for k, m in CASES])
def test_encode_then_posterior_matches_diffusers(swapped, kind, mode, dtype):
    vae, x = MAKERS[kind](mode)
    vae, x = vae.to(dtype), x.to(dtype)
    posterior = vae.encode(x).latent_dist
    assert isinstance(posterior, DiagonalGaussianDistribution)
    moments = posterior.parameters
    z_for_nll = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    with torch.no_grad():  # a training script logging the posterior before its loss
        for value in (posterior.std, posterior.var, posterior.logvar, *outputs(posterior, z_for_nll).values()):
            assert torch.isfinite(value).all()
    ours = outputs(posterior, z_for_nll)
    eps = our_eps(posterior.mean)
    params = [p for p in vae.parameters() if p.requires_grad]
    grads = torch.autograd.grad(weighted(ours), params, retain_graph=True, allow_unused=True)
    if dtype == torch.float32:  # the same network: only the posterior's arithmetic differs
        theirs = outputs(DiffusersPosterior(moments), z_for_nll, eps)
        their_grads = torch.autograd.grad(weighted(theirs), params, allow_unused=True)
        for name in ours:
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-5, msg=name)
        for grad, expected in zip(grads, their_grads):
            if expected is None:
                assert grad is None
                continue
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)
        return
    # bfloat16: diffusers' formulas in float64 on the very moments, values and moment gradients.
    leaf = moments.detach().double().requires_grad_(True)
    theirs = outputs(DiffusersPosterior(leaf), z_for_nll.double(), eps.double())
    (their_grad,) = torch.autograd.grad(weighted(theirs), leaf)
    (grad,) = torch.autograd.grad(weighted(ours), moments)
    terms = posterior.mean[0, :, 0].numel() * 16
    for name in ours:
        assert ours[name].dtype == (torch.float32 if name in ("kl", "nll") else dtype), name
        torch.testing.assert_close(ours[name].double(), theirs[name], rtol=1.6e-2, atol=1.6e-2 * terms**0.5, msg=name)
    torch.testing.assert_close(grad.double(), their_grad, rtol=1.6e-2, atol=6.4e-2)


def test_full_forward_with_sample_posterior_is_seeded(swapped):
    vae, x = autoencoder_kl("plain")
    out = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(0)).sample
    assert torch.equal(out, vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(0)).sample)
    vae.enable_slicing()  # contiguous moments of (nearly) the same values: the same ε
    sliced = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(0)).sample
    torch.testing.assert_close(sliced, out, rtol=1e-4, atol=1e-4)
