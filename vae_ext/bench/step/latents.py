"""The latent layers a training step is timed with: moments h [B, 2C, ...] (and an optional ε) -> (z, kl [B]).

* ``eager``: the layer as usually written in PyTorch (suites/latent.py's formula; for the
  AutoencoderKL case, diffusers' own ``DiagonalGaussianDistribution``: ``sample()``, ``kl()``);
* ``vae_ext``: ``vae_ext.reparameterize_kl`` (for AutoencoderKL, vae_ext's drop-in
  ``DiagonalGaussianDistribution``, which clamps logvar as diffusers' does);
* ``free``: z = mu, kl = 0: no latent layer cost at all, the limit of what any layer can gain.

A given ε makes every layer deterministic (z = mu + ε·σ for both eager and vae_ext), which is
how the tests check that the layers compute the same loss.
"""

from __future__ import annotations

import torch

import vae_ext

from ..suites.latent import eager_reparameterize_kl

LATENTS = ("eager", "vae_ext", "free")


def eager_latent(h, eps=None):
    mu, logvar = h.chunk(2, dim=1)
    return eager_reparameterize_kl(mu, logvar, eps)


def vae_ext_latent(h, eps=None):
    mu, logvar = h.chunk(2, dim=1)
    return vae_ext.reparameterize_kl(mu, logvar, eps=eps)


def free_latent(h, eps=None):
    mu = h.chunk(2, dim=1)[0]
    return mu, torch.zeros(mu.shape[0], dtype=mu.dtype, device=mu.device)


def diffusers_latent(h, eps=None):
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    posterior = DiagonalGaussianDistribution(h)
    z = posterior.sample() if eps is None else posterior.mean + posterior.std * eps
    return z, posterior.kl()


def vae_ext_posterior_latent(h, eps=None):
    posterior = vae_ext.distributions.DiagonalGaussianDistribution(h)
    if eps is None:
        return posterior.sample(), posterior.kl()
    return vae_ext.reparameterize(posterior.mean, posterior.logvar, eps=eps), posterior.kl()


def latent_layers(model_name: str) -> dict:
    """Latent name -> layer function for one model case."""
    if model_name == "autoencoder-kl":
        return {"eager": diffusers_latent, "vae_ext": vae_ext_posterior_latent, "free": free_latent}
    return {"eager": eager_latent, "vae_ext": vae_ext_latent, "free": free_latent}
