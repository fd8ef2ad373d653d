"""Autoencoder and VAE modules on the fused ops, plus small encoder / decoder builders.

* ``GaussianLatent``: encoder features [B, 2·L, ...] -> (z, kl) through ``reparameterize_kl``.
* ``VAE``: encoder -> (mu, logvar) -> z -> decoder, negative ELBO loss, prior sampling and an
  importance-weighted log p(x) estimate.
* ``AE``: encoder -> z -> decoder, squared-error ("mse") or Euclidean ("l2") loss.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Independent, Normal

from ._args import check_tensor
from ._numerics import check_choice, check_count, compute_dtype, log_normal, per_sample_sum
from .distributions import DiagonalGaussian
from .functional import reparameterize_kl
from .losses import AE_LOSSES, ELBOLoss, ae_reconstruction_error


def _latent_shape(latent_dim) -> tuple:
    shape = (latent_dim,) if isinstance(latent_dim, int) else tuple(latent_dim)
    if not shape or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in shape):
        raise ValueError(f"latent_dim must be a positive int or a tuple of them (L, *spatial), got {latent_dim!r}")
    return shape


def _as_clamp(logvar_clamp):
    if logvar_clamp is None:
        return None
    low, high = (-float(logvar_clamp), float(logvar_clamp)) if isinstance(logvar_clamp, (int, float)) else logvar_clamp
    if not low < high:
        raise ValueError(f"logvar_clamp must be a positive number c (for [-c, c]) or (low, high), got {logvar_clamp!r}")
    return float(low), float(high)


def _log_normal(x, mean, logvar):
    """log N(x | mean, exp(logvar)) summed per sample; mean / logvar None mean 0."""
    return per_sample_sum(log_normal(x, mean, logvar).expand(x.shape))


class GaussianLatent(nn.Module):
    """Turns encoder features into (z, kl): the stochastic layer of a VAE.

    ``latent_dim``: L for [B, 2·L] MLP features, or (L, *spatial) for convolutional features
    [B, 2·L, *spatial]. The features are split along dim 1 into mu and logvar as views.

    ``prior``: None / "standard" (N(0, I), the fused standard-prior path), "learnable"
    (per-latent mu_p and logvar_p parameters, initialised to 0), or a fixed (mu_p, logvar_p)
    pair of floats or tensors of shape latent_dim (scalars broadcast).

    ``logvar_clamp``: None, c (clamp logvar to [-c, c]) or (low, high).
    """

    def __init__(self, latent_dim, *, prior=None, logvar_clamp=None):
        super().__init__()
        self.latent_shape = _latent_shape(latent_dim)
        self.logvar_clamp = _as_clamp(logvar_clamp)
        self.prior_kind = self._init_prior(prior)

    def _init_prior(self, prior):
        if prior is None or prior == "standard":
            self.prior_mu, self.prior_logvar = None, None
            return "standard"
        if prior == "learnable":
            self.prior_mu = nn.Parameter(torch.zeros(self.latent_shape))
            self.prior_logvar = nn.Parameter(torch.zeros(self.latent_shape))
            return "learnable"
        if isinstance(prior, (tuple, list)) and len(prior) == 2:
            for name, value in zip(("prior_mu", "prior_logvar"), prior):
                is_tensor = isinstance(value, torch.Tensor)
                if is_tensor:
                    check_tensor(value, name)
                elif isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"{name} must be a float or a floating-point tensor, got {type(value).__name__}")
                tensor = value.detach().clone() if is_tensor else torch.tensor(float(value))
                if tensor.numel() != 1 and tuple(tensor.shape) != self.latent_shape:
                    raise ValueError(
                        f"{name} must be a scalar or of shape {self.latent_shape}, got {tuple(tensor.shape)}"
                    )
                self.register_buffer(name, tensor.reshape(()) if tensor.numel() == 1 else tensor)
            return "fixed"
        raise ValueError(f"prior must be None, 'standard', 'learnable' or a (mu_p, logvar_p) pair, got {prior!r}")

    def prior_params(self):
        """(prior_mu, prior_logvar) as the ops take them: both None for the standard prior."""
        return self.prior_mu, self.prior_logvar

    def split(self, h):
        """(mu, logvar): views of h's two halves along dim 1 (logvar clamped if configured)."""
        check_tensor(h, "h (the encoder output)", dtypes=None)  # its dtype: the ops check mu's
        latent, width = self.latent_shape[0], h.shape[1] if h.dim() > 1 else None
        if h.dim() != len(self.latent_shape) + 1 or width != 2 * latent or tuple(h.shape[2:]) != self.latent_shape[1:]:
            expected = (2 * latent, *self.latent_shape[1:])
            raise ValueError(
                f"h (the encoder output) must be [B, 2 * latent_dim, ...] = [B, {', '.join(map(str, expected))}] "
                f"(mu and logvar, latent_dim={self.latent_shape}); got {tuple(h.shape)}"
            )
        mu, logvar = h.chunk(2, dim=1)
        if self.logvar_clamp is not None:
            logvar = logvar.clamp(*self.logvar_clamp)
        return mu, logvar

    def forward(self, h, *, eps=None, generator=None):
        """(z, kl): z = mu + eps·σ (eps drawn in the kernel when None) and the per-sample KL [B]."""
        mu, logvar = self.split(h)
        pm, plv = self.prior_params()
        return reparameterize_kl(mu, logvar, eps=eps, prior_mu=pm, prior_logvar=plv, generator=generator)

    def posterior(self, h) -> DiagonalGaussian:
        """q(z|x) from encoder features h as a torch distribution (sample and KL on the fused ops)."""
        return DiagonalGaussian(*self.split(h))

    def prior(self, *, device=None, dtype=torch.float32) -> Independent:
        """p(z) as Independent(Normal) over latent_dim, for kl_divergence(self.posterior(h), self.prior())."""
        if self.prior_kind == "standard":
            zero = torch.zeros((), device=device, dtype=dtype)
            loc, scale = zero.expand(self.latent_shape), (zero + 1).expand(self.latent_shape)
        else:
            loc, scale = (
                self.prior_mu.expand(self.latent_shape),
                torch.exp(0.5 * self.prior_logvar).expand(self.latent_shape),
            )
        return Independent(Normal(loc, scale), len(self.latent_shape))

    def sample_prior(self, n, *, generator=None, device=None, dtype=torch.float32):
        """n draws from the prior, [n, *latent_dim]."""
        eps = torch.randn((n, *self.latent_shape), generator=generator, device=device, dtype=dtype)
        if self.prior_kind == "standard":
            return eps
        return self.prior_mu.to(eps) + eps * torch.exp(0.5 * self.prior_logvar.to(eps))

    def log_prior(self, z):
        """log p(z) per sample [B]."""
        pm, plv = self.prior_params()
        return _log_normal(z, None if pm is None else pm.to(z), None if plv is None else plv.to(z))

    def extra_repr(self):
        return f"latent_dim={self.latent_shape}, prior={self.prior_kind!r}, logvar_clamp={self.logvar_clamp}"


class VAEOutput(NamedTuple):
    """What ``VAE.forward`` returns; loss, recon_loss and kl are batch means."""

    loss: torch.Tensor
    recon_loss: torch.Tensor
    kl: torch.Tensor
    x_hat: torch.Tensor
    z: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


class VAE(nn.Module):
    """Variational autoencoder: encoder(x) -> [B, 2·L, ...] -> (mu, logvar) -> z -> decoder(z) -> x_hat.

    x_hat holds logits for ``likelihood="bernoulli"`` (data in [0, 1]) and the mean for
    ``"gaussian"`` (N(x_hat, exp(obs_logvar)), obs_logvar fixed at 0 by default, see ELBOLoss).
    ``forward(x)`` returns a VAEOutput whose ``loss`` is the negative ELBO (β-weighted KL, free
    bits if set) averaged over the batch. The KL goes through the fused ``reparameterize_kl``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        latent_dim,
        likelihood="bernoulli",
        beta=1.0,
        free_bits=0.0,
        prior=None,
        logvar_clamp=None,
        obs_logvar=0.0,
        learn_obs_logvar=False,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent = GaussianLatent(latent_dim, prior=prior, logvar_clamp=logvar_clamp)
        self.loss_fn = ELBOLoss(
            likelihood, beta, free_bits, "mean", obs_logvar=obs_logvar, learn_obs_logvar=learn_obs_logvar
        )

    @property
    def beta(self) -> float:
        return self.loss_fn.beta

    @beta.setter
    def beta(self, value):
        self.loss_fn.beta = value

    @property
    def likelihood(self) -> str:
        return self.loss_fn.likelihood

    @property
    def latent_shape(self) -> tuple:
        return self.latent.latent_shape

    def encode(self, x):
        """(mu, logvar) of q(z|x), views of the encoder output."""
        return self.latent.split(self.encoder(x))

    def posterior(self, x) -> DiagonalGaussian:
        """q(z|x) as a torch distribution; ``forward`` keeps its single fused pass."""
        return self.latent.posterior(self.encoder(x))

    def prior(self) -> Independent:
        """p(z) as Independent(Normal), on the model's device and dtype."""
        ref = self._reference_tensor()
        return self.latent.prior(device=ref.device, dtype=ref.dtype)

    def decode(self, z):
        """Decoder output: logits (Bernoulli) or mean (Gaussian)."""
        return self.decoder(z)

    def mean(self, x_hat):
        """The mean of p(x|z) from the decoder output: sigmoid(logits) or the Gaussian mean."""
        return torch.sigmoid(x_hat) if self.likelihood == "bernoulli" else x_hat

    def forward(self, x, *, eps=None, generator=None) -> VAEOutput:
        mu, logvar = self.encode(x)
        priors = dict(zip(("prior_mu", "prior_logvar"), self.latent.prior_params()))
        z, kl = reparameterize_kl(mu, logvar, eps=eps, generator=generator, **priors)
        x_hat = self.decoder(z)
        parts = self.loss_fn(x_hat, x, mu, logvar, kl=kl, return_parts=True, **priors)
        return VAEOutput(parts.loss, parts.recon_loss, parts.kl, x_hat, z, mu, logvar)

    def reconstruct(self, x):
        """Mean of p(x|z = mu(x)): the deterministic reconstruction through the posterior mean."""
        mu, _ = self.encode(x)
        return self.mean(self.decoder(mu))

    def _reference_tensor(self):
        for tensor in self.parameters():
            return tensor
        return torch.empty(())

    def sample(self, n, *, generator=None):
        """n samples from the model: the mean of p(x|z) for z drawn from the prior."""
        check_count(n, "n", minimum=0)
        ref = self._reference_tensor()
        z = self.latent.sample_prior(n, generator=generator, device=ref.device, dtype=ref.dtype)
        return self.mean(self.decoder(z))

    def log_likelihood(self, x, k=100, *, generator=None):
        """Importance-weighted estimate of log p(x) per sample [B] with k samples (Burda et al. 2016).

        log p(x) ≈ logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k, z_i ~ q(z|x);
        a lower bound that tightens as k grows (k = 1 is an unbiased ELBO estimate).
        """
        check_count(k, "k")
        mu, logvar = self.encode(x)
        dtype = compute_dtype(mu.dtype)
        mu, logvar = mu.to(dtype), logvar.to(dtype)
        std = torch.exp(0.5 * logvar)
        weights = []
        for _ in range(k):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=dtype)
            z = mu + eps * std
            log_q = _log_normal(eps, None, None) - 0.5 * per_sample_sum(logvar)
            x_hat = self.decoder(z.to(self._reference_tensor().dtype))
            log_px = -self.loss_fn.reconstruction(x_hat, x).to(dtype)
            weights.append(log_px + self.latent.log_prior(z) - log_q)
        return torch.logsumexp(torch.stack(weights), dim=0) - math.log(k)


class AEOutput(NamedTuple):
    """What ``AE.forward`` returns; loss is the batch mean of the per-sample error."""

    loss: torch.Tensor
    x_hat: torch.Tensor
    z: torch.Tensor


class AE(nn.Module):
    """Deterministic autoencoder: z = encoder(x), x_hat = decoder(z).

    ``loss="mse"``: squared error summed per sample, mean over the batch; ``"l2"``: the
    per-sample Euclidean norm ||x - x_hat||_2, mean over the batch. Errors sum in float32 for
    half inputs.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, loss="mse"):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.loss_kind = check_choice(loss, AE_LOSSES, "loss")

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x) -> AEOutput:
        z = self.encoder(x)
        x_hat = self.decoder(z)
        return AEOutput(ae_reconstruction_error(x_hat, x, self.loss_kind).mean(), x_hat, z)

    def reconstruct(self, x):
        return self.decoder(self.encoder(x))

    def extra_repr(self):
        return f"loss={self.loss_kind!r}"


# --------------------------------------------------------------------------- network builders


def mlp_encoder(input_shape, out_features, hidden=(512, 256), activation=nn.ELU) -> nn.Sequential:
    """Flatten -> Linear/activation stack -> Linear(out_features).

    ELU by default: unlike ReLU its units cannot die in the large first steps of VAE training,
    which can otherwise leave an encoder whose output no longer depends on x.
    """
    layers, width = [nn.Flatten()], math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), activation()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_decoder(latent_dim, output_shape, hidden=(256, 512), activation=nn.ELU) -> nn.Sequential:
    """Linear/activation stack -> Linear(prod(output_shape)) -> reshape to [B, *output_shape]."""
    layers, width = [], latent_dim
    for size in hidden:
        layers += [nn.Linear(width, size), activation()]
        width = size
    layers += [nn.Linear(width, math.prod(output_shape)), nn.Unflatten(1, tuple(output_shape))]
    return nn.Sequential(*layers)


def _check_conv_shape(shape):
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"the conv networks need [C, H, W] inputs with H and W divisible by 4, got {tuple(shape)}")


def conv_encoder(input_shape, out_features, channels=(32, 64), hidden=256, activation=nn.ELU) -> nn.Sequential:
    """Two stride-2 convolutions -> Linear/activation -> Linear(out_features); input [C, H, W], H, W % 4 == 0."""
    _check_conv_shape(input_shape)
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, channels[0], 4, stride=2, padding=1),
        activation(),
        nn.Conv2d(channels[0], channels[1], 4, stride=2, padding=1),
        activation(),
        nn.Flatten(),
        nn.Linear(channels[1] * (h // 4) * (w // 4), hidden),
        activation(),
        nn.Linear(hidden, out_features),
    )


def conv_decoder(latent_dim, output_shape, channels=(64, 32), hidden=256, activation=nn.ELU) -> nn.Sequential:
    """The mirror of conv_encoder: Linear layers -> two stride-2 transposed convolutions."""
    _check_conv_shape(output_shape)
    c, h, w = output_shape
    return nn.Sequential(
        nn.Linear(latent_dim, hidden),
        activation(),
        nn.Linear(hidden, channels[0] * (h // 4) * (w // 4)),
        activation(),
        nn.Unflatten(1, (channels[0], h // 4, w // 4)),
        nn.ConvTranspose2d(channels[0], channels[1], 4, stride=2, padding=1),
        activation(),
        nn.ConvTranspose2d(channels[1], c, 4, stride=2, padding=1),
    )
