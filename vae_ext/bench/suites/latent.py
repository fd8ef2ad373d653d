"""Suite "latent": the stochastic layer of a VAE, the ops of docs/design.md section 3.

The eager functions are the computation as it is usually written in PyTorch; the vae_ext ones
call the fused ops. Byte model (N elements; the same count for every impl):

    reparameterize_kl  fwd: mu, logvar -> z           bwd: grad_z, mu, logvar -> grad_mu, grad_logvar
    reparameterize     fwd: mu, logvar -> z           bwd: grad_z, logvar -> grad_logvar (grad_mu is grad_z)
    gaussian_kl        fwd: mu, logvar -> kl [B]      bwd: mu, logvar -> grad_mu, grad_logvar
"""

from __future__ import annotations

import torch

import vae_ext

from . import BenchOp, register


def _latent_dims(mu):
    return tuple(range(1, mu.dim()))


def eager_reparameterize_kl(mu, logvar, eps=None):
    if eps is None:
        eps = torch.randn_like(mu)
    z = mu + eps * torch.exp(0.5 * logvar)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=_latent_dims(mu))
    return z, kl


def eager_reparameterize(mu, logvar, eps=None):
    if eps is None:
        eps = torch.randn_like(mu)
    return (mu + eps * torch.exp(0.5 * logvar),)


def eager_gaussian_kl(mu, logvar, eps=None):
    return (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=_latent_dims(mu)),)


def vae_ext_reparameterize_kl(mu, logvar, eps=None):
    return vae_ext.reparameterize_kl(mu, logvar, eps=eps, reduction="none")


def vae_ext_reparameterize(mu, logvar, eps=None):
    return (vae_ext.reparameterize(mu, logvar, eps=eps),)


def vae_ext_gaussian_kl(mu, logvar, eps=None):
    return (vae_ext.gaussian_kl(mu, logvar, reduction="none"),)


register(
    BenchOp(
        "reparameterize_kl",
        "latent",
        ("z", "kl"),
        eager_reparameterize_kl,
        vae_ext_reparameterize_kl,
        {"fwd": 3, "bwd": 5},
        traffic={"fwd": (("mu", "logvar"), 1), "bwd": (("grad_z", "mu", "logvar"), 2)},
    )
)
register(
    BenchOp(
        "reparameterize",
        "latent",
        ("z",),
        eager_reparameterize,
        vae_ext_reparameterize,
        {"fwd": 3, "bwd": 3},
        traffic={"fwd": (("mu", "logvar"), 1), "bwd": (("grad_z", "logvar"), 1)},
    )
)
register(
    BenchOp(
        "gaussian_kl",
        "latent",
        ("kl",),
        eager_gaussian_kl,
        vae_ext_gaussian_kl,
        {"fwd": 2, "bwd": 4},
        uses_eps=False,
        traffic={"fwd": (("mu", "logvar"), 0), "bwd": (("mu", "logvar"), 2)},
    )
)
