"""The model the train command builds from its options (and checkpoints rebuild from their config)."""

from __future__ import annotations

import torch

from ..modules import AE, VAE, conv_decoder, conv_encoder, mlp_decoder, mlp_encoder

MODEL_KEYS = (
    "model", "arch", "hidden", "latent_dim", "likelihood", "ae_loss", "beta", "free_bits", "prior", "logvar_clamp",
)  # fmt: skip


def model_config(args, sample_shape) -> dict:
    config = {key: getattr(args, key) for key in MODEL_KEYS}
    config["sample_shape"] = list(sample_shape)
    return config


def _networks(config, out_features):
    shape, latent = tuple(config["sample_shape"]), config["latent_dim"]
    if config["arch"] == "conv":
        return conv_encoder(shape, out_features), conv_decoder(latent, shape)
    hidden = tuple(config["hidden"])
    return mlp_encoder(shape, out_features, hidden), mlp_decoder(latent, shape, hidden[::-1])


def build_model(config: dict) -> torch.nn.Module:
    """A fresh VAE or AE from a model config (what checkpoints store under "config")."""
    if config["model"] == "ae":
        encoder, decoder = _networks(config, config["latent_dim"])
        return AE(encoder, torch.nn.Sequential(decoder, torch.nn.Sigmoid()), loss=config["ae_loss"])
    encoder, decoder = _networks(config, 2 * config["latent_dim"])
    return VAE(
        encoder,
        decoder,
        latent_dim=config["latent_dim"],
        likelihood=config["likelihood"],
        beta=config["beta"],
        free_bits=config["free_bits"],
        prior=config["prior"],
        logvar_clamp=config["logvar_clamp"],
    )


def _output_layer(decoder):
    """The decoder's last layer with a bias (Linear or transposed convolution)."""
    for module in reversed(list(decoder.modules())):
        if isinstance(module, (torch.nn.Linear, torch.nn.ConvTranspose2d)) and module.bias is not None:
            return module
    return None


@torch.no_grad()
def init_output_bias(model: torch.nn.Module, images: torch.Tensor, config: dict) -> None:
    """Starts the decoder at the data's mean image (logits of it for Bernoulli outputs and the
    AE's sigmoid). Without it the first steps spend huge gradients on learning the mostly dark
    background, which can push the encoder into a collapsed state."""
    layer = _output_layer(model.decoder)
    if layer is None:
        return
    mean = images.float().mean(dim=0)
    if isinstance(layer, torch.nn.ConvTranspose2d):
        mean = mean.reshape(mean.shape[0], -1).mean(dim=1)
    else:
        mean = mean.flatten()
    if mean.numel() != layer.bias.numel():
        return
    if config["model"] == "ae" or config["likelihood"] == "bernoulli":
        mean = mean.clamp(1e-3, 1 - 1e-3)
        mean = torch.log(mean) - torch.log1p(-mean)
    layer.bias.copy_(mean)
