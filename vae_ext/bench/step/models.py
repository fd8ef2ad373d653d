"""The models of the training-step benchmark: encoder -> [B, 2C, ...] moments -> latent layer -> decoder.

Each case builds its model at a size ("quick" by default, "full" on request) with a fixed batch
of data; the latent layer is passed in per step (latents.py), so every latent layer runs the
same encoder, decoder, loss and optimizer.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Size:
    batch: int
    sample: tuple  # one input sample's shape
    latent: tuple  # one sample's latent shape (C, *spatial)
    hidden: int = 0  # MLP hidden width / conv channels / AutoencoderKL block channels


class StepModel(nn.Module):
    """x -> encoder -> moments h [B, 2C, ...] -> latent(h) = (z, kl) -> decoder -> negative ELBO (batch mean)."""

    def __init__(self, encoder, decoder, likelihood):
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood

    def loss(self, x, latent, eps=None):
        z, kl = latent(self.encoder(x), eps)
        x_hat = self.decoder(z)
        if self.likelihood == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(x_hat, x, reduction="none")
        else:
            recon = (x_hat - x).square()
        return (recon.flatten(1).sum(1) + kl).mean()


def _mlp(size: Size):
    width, latent = math.prod(size.sample), size.latent[0]
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(width, size.hidden), nn.ELU(), nn.Linear(size.hidden, 2 * latent))
    decoder = nn.Sequential(
        nn.Linear(latent, size.hidden), nn.ELU(), nn.Linear(size.hidden, width), nn.Unflatten(1, size.sample)
    )
    return StepModel(encoder, decoder, "bernoulli")


def _conv(size: Size):
    channels, latent = size.sample[0], size.latent[0]
    # Two stride-2 convolutions: H×W -> H/4×W/4 latents.
    encoder = nn.Sequential(
        nn.Conv2d(channels, size.hidden, 4, stride=2, padding=1),
        nn.ELU(),
        nn.Conv2d(size.hidden, 2 * latent, 4, stride=2, padding=1),
    )
    decoder = nn.Sequential(
        nn.ConvTranspose2d(latent, size.hidden, 4, stride=2, padding=1),
        nn.ELU(),
        nn.ConvTranspose2d(size.hidden, channels, 4, stride=2, padding=1),
    )
    return StepModel(encoder, decoder, "gaussian")


def diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def _autoencoder_kl(size: Size):
    from diffusers import AutoencoderKL

    levels = int(math.log2(size.sample[1] // size.latent[1])) + 1  # each level after the first halves H, W
    vae = AutoencoderKL(
        in_channels=size.sample[0],
        out_channels=size.sample[0],
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(size.hidden * 2**i for i in range(levels)),
        layers_per_block=1,
        latent_channels=size.latent[0],
        norm_num_groups=min(32, size.hidden),
        sample_size=size.sample[1],
    )
    # AutoencoderKL.encode / decode without their output wrappers: moments [B, 2·C, h, w] in, z out.
    encoder = nn.Sequential(vae.encoder, vae.quant_conv)
    decoder = nn.Sequential(vae.post_quant_conv, vae.decoder)
    return StepModel(encoder, decoder, "gaussian")


@dataclass(frozen=True)
class ModelCase:
    name: str
    description: str
    build: object  # Size -> StepModel
    sizes: dict  # "quick" / "full" -> Size
    needs: str | None = None  # an optional package the case needs
    data: str = "unit"  # "unit": inputs in [0, 1] (Bernoulli targets); "normal": standard normal

    def make(self, size_name, device, seed=0):
        """(model, x): the model on ``device`` (weights from ``seed``) and its fixed batch."""
        size = self.sizes[size_name]
        torch.manual_seed(seed)
        model = self.build(size).to(device)
        generator = torch.Generator().manual_seed(seed + 1)
        x = torch.rand((size.batch, *size.sample), generator=generator)
        if self.data == "normal":
            x = x.mul_(2).sub_(1)
        return model, x.to(device)

    def available(self) -> bool:
        return self.needs is None or importlib.util.find_spec(self.needs) is not None


MODELS = {
    case.name: case
    for case in (
        ModelCase(
            "mlp-32",
            "MLP 784→512→2·32, Bernoulli",
            _mlp,
            {"quick": Size(256, (1, 28, 28), (32,), 512), "full": Size(256, (1, 28, 28), (32,), 512)},
        ),
        ModelCase(
            "mlp-256",
            "MLP 784→512→2·256, Bernoulli",
            _mlp,
            {"quick": Size(256, (1, 28, 28), (256,), 512), "full": Size(1024, (1, 28, 28), (256,), 512)},
        ),
        ModelCase(
            "conv",
            "conv 3×32×32 → 16×8×8 latents, Gaussian",
            _conv,
            {"quick": Size(64, (3, 32, 32), (16, 8, 8), 32), "full": Size(256, (3, 32, 32), (16, 8, 8), 32)},
            data="normal",
        ),
        ModelCase(
            "autoencoder-kl",
            "diffusers AutoencoderKL, channels_last moments, Gaussian",
            _autoencoder_kl,
            {"quick": Size(2, (3, 32, 32), (16, 16, 16), 32), "full": Size(8, (3, 128, 128), (16, 64, 64), 32)},
            needs="diffusers",
            data="normal",
        ),
    )
}
