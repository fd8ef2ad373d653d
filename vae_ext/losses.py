"""Reconstruction likelihoods and the ELBO loss (negative evidence lower bound).

All per-sample sums accumulate in float32 for float16 / bfloat16 inputs (float64 for
float64), so the losses stay finite under ``torch.autocast`` where the same expression
evaluated in half precision overflows.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._args import as_prior, check_tensor
from ._numerics import (
    FLOAT_DTYPES,
    check_choice,
    check_non_negative,
    check_reduction,
    choice_error,
    compute_dtype,
    log_normal,
    per_sample_sum,
    reduce_batch,
    rows,
)
from .functional import gaussian_kl
from .reference import kl_elementwise

LIKELIHOODS = ("bernoulli", "gaussian")
AE_LOSSES = ("mse", "l2")
# A Bernoulli target may be binary data of any real dtype: bool and integer targets convert to
# the compute dtype. A Gaussian target, like every other tensor argument, is floating-point.
_BINARY_DTYPES = (*FLOAT_DTYPES, torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# --------------------------------------------------------------------------- likelihoods


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(x | sigmoid(logits)) summed per sample: [B]. x may be soft targets in [0, 1]."""
    dtype = compute_dtype(logits.dtype)
    nll = F.binary_cross_entropy_with_logits(logits.to(dtype), x.to(dtype), reduction="none")
    return per_sample_sum(nll)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, logvar=0.0) -> torch.Tensor:
    """-log N(x | mean, exp(logvar)) summed per sample: [B], constant included.

    ``logvar``: a float, a 0-d tensor or a per-pixel tensor of shape x.shape[1:].
    """
    dtype = compute_dtype(mean.dtype)
    x, mean = x.to(dtype), mean.to(dtype)
    nll = -log_normal(x, mean, logvar.to(dtype) if isinstance(logvar, torch.Tensor) else logvar)
    return per_sample_sum(nll.expand(x.shape))


def check_reconstruction_args(x_hat, x, likelihood="gaussian") -> None:
    """x_hat a floating-point tensor; x of its shape and device, floating-point (or any real
    dtype for the Bernoulli likelihood's binary data)."""
    check_tensor(x_hat, "x_hat")
    if likelihood == "bernoulli":
        check_tensor(x, "x", _BINARY_DTYPES, "a floating-point, bool or integer tensor")
    else:
        check_tensor(x, "x")
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat must have x's shape {tuple(x.shape)}, got {tuple(x_hat.shape)}")
    if x.device != x_hat.device:
        raise ValueError(f"x must be on x_hat's device {x_hat.device}, got {x.device}")


def reconstruction_nll(x_hat, x, likelihood="bernoulli", obs_logvar=0.0) -> torch.Tensor:
    """Per-sample negative log-likelihood [B]: x_hat holds logits (Bernoulli) or means (Gaussian)."""
    check_reconstruction_args(x_hat, x, likelihood)
    if likelihood == "bernoulli":
        return bernoulli_nll(x_hat, x)
    if likelihood == "gaussian":
        return gaussian_nll(x_hat, x, obs_logvar)
    raise choice_error(likelihood, LIKELIHOODS, "likelihood")


def ae_reconstruction_error(x_hat, x, kind="mse") -> torch.Tensor:
    """Per-sample AE error [B]: "mse" the squared error summed over features (not averaged, as
    ``F.mse_loss`` does), "l2" its square root, the Euclidean distance."""
    check_choice(kind, AE_LOSSES, "loss")
    check_reconstruction_args(x_hat, x)
    dtype = compute_dtype(x_hat.dtype)
    diff = rows(x_hat.to(dtype) - x.to(dtype))
    if kind == "mse":
        return (diff * diff).sum(dim=1)
    return torch.linalg.vector_norm(diff, dim=1)


# --------------------------------------------------------------------------- KL terms


def kl_per_dimension(mu, logvar, prior_mu=None, prior_logvar=None) -> torch.Tensor:
    """The KL of every latent element, [B, ...] like mu, in the accumulation dtype; the priors
    as the fused ops take them (``as_prior``)."""
    check_tensor(mu, "mu")
    check_tensor(logvar, "logvar")
    kl = kl_elementwise(mu, logvar, as_prior(prior_mu, mu, "prior_mu"), as_prior(prior_logvar, mu, "prior_logvar"))
    return kl.to(compute_dtype(mu.dtype)).expand(mu.shape)


def free_bits_kl(kl_elements: torch.Tensor, free_bits: float) -> torch.Tensor:
    """sum_j max(mean_over_batch(KL_j), free_bits): the free-bits KL of Kingma et al. (2016)."""
    per_dim = rows(kl_elements).mean(dim=0)
    return per_dim.clamp(min=free_bits).sum()


# --------------------------------------------------------------------------- ELBO


class ELBOParts(NamedTuple):
    """The loss and its parts, each reduced like the loss.

    ``kl`` is the plain KL; ``kl_penalty`` is the KL term as it enters the loss before the
    β weighting (the free-bits KL when free_bits > 0, else the KL itself).
    """

    loss: torch.Tensor
    recon_loss: torch.Tensor
    kl: torch.Tensor
    kl_penalty: torch.Tensor


class ELBOLoss(nn.Module):
    """Negative ELBO: reconstruction NLL + β · KL(q(z|x) || p(z)), a drop-in training loss.

    Call as ``loss_fn(x_hat, x, mu, logvar, *, prior_mu=None, prior_logvar=None, kl=None)``;
    x_hat holds logits for ``likelihood="bernoulli"`` and means for ``"gaussian"``. A Bernoulli
    target x may be bool or integer binary data (converted); a Gaussian target is floating-point.

    * reduction: "mean" (over the batch, of per-sample sums: the ELBO convention), "sum" or
      "none" (per-sample [B]).
    * free_bits λ > 0: the KL term becomes sum_j max(mean_batch KL_j, λ) over latent elements
      j (Kingma et al. 2016), computed from the per-element KL; it is a batch quantity, so
      reduction "none" is refused. With free_bits = 0 the KL is the fused ``gaussian_kl`` op.
    * Gaussian likelihood: p(x|z) = N(x_hat, exp(obs_logvar)). ``obs_logvar`` is a float (a
      scalar, default 0: σ = 1, i.e. squared error / 2 + constant) or a tensor of shape
      x.shape[1:] (per pixel); ``learn_obs_logvar=True`` makes it a learned parameter
      initialised from that value. The Bernoulli likelihood has no variance: obs_logvar is
      refused there.
    * ``kl=``: the per-sample KL [B] already computed for these mu / logvar (by the fused
      sampler, ``reparameterize_kl``); used instead of computing it again (with free bits > 0,
      as the plain ``kl`` part; the penalty needs the per-element KL).
    """

    def __init__(
        self,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        free_bits: float = 0.0,
        reduction: str = "mean",
        *,
        obs_logvar: float | torch.Tensor = 0.0,
        learn_obs_logvar: bool = False,
    ) -> None:
        super().__init__()
        self.likelihood = check_choice(likelihood, LIKELIHOODS, "likelihood")
        self.reduction = check_reduction(reduction)
        self.beta = beta
        self.free_bits = check_non_negative(free_bits, "free_bits")
        if self.free_bits > 0 and reduction == "none":
            raise ValueError("free_bits > 0 makes the KL a batch quantity: use reduction 'mean' or 'sum'")
        self._init_obs_logvar(obs_logvar, learn_obs_logvar)

    def _init_obs_logvar(self, obs_logvar, learn):
        if learn and self.likelihood != "gaussian":
            raise ValueError("learn_obs_logvar needs likelihood='gaussian'")
        is_tensor = isinstance(obs_logvar, torch.Tensor)
        if is_tensor:
            check_tensor(obs_logvar, "obs_logvar")
        elif isinstance(obs_logvar, bool) or not isinstance(obs_logvar, (int, float)):
            raise TypeError(f"obs_logvar must be a float or a floating-point tensor, got {type(obs_logvar).__name__}")
        if self.likelihood != "gaussian" and (is_tensor or obs_logvar != 0):
            raise ValueError(
                f"obs_logvar is the Gaussian likelihood's log variance; likelihood={self.likelihood!r} has none"
            )
        value = obs_logvar.detach().clone() if is_tensor else torch.tensor(float(obs_logvar))
        if learn:
            self.obs_logvar = nn.Parameter(value)
        elif is_tensor:
            self.register_buffer("obs_logvar", value)
        else:
            self.obs_logvar = float(obs_logvar)

    @property
    def beta(self) -> float:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = check_non_negative(value, "beta")

    def reconstruction(self, x_hat, x) -> torch.Tensor:
        """Per-sample reconstruction NLL [B]."""
        return reconstruction_nll(x_hat, x, self.likelihood, self.obs_logvar)

    def forward(
        self,
        x_hat: torch.Tensor,
        x: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        *,
        prior_mu: float | torch.Tensor | None = None,
        prior_logvar: float | torch.Tensor | None = None,
        kl: torch.Tensor | None = None,
        return_parts: bool = False,
    ) -> torch.Tensor | ELBOParts:
        recon = self.reconstruction(x_hat, x)
        if kl is not None:
            _check_per_sample_kl(kl, x_hat)
        if self.free_bits > 0:
            parts = self._free_bits_parts(recon, mu, logvar, prior_mu, prior_logvar, kl)
        else:
            if kl is None:
                kl = gaussian_kl(mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar, reduction="none")
            per_sample = recon + self.beta * kl
            parts = ELBOParts(*(reduce_batch(t, self.reduction) for t in (per_sample, recon, kl, kl)))
        return parts if return_parts else parts.loss

    def _free_bits_parts(self, recon, mu, logvar, prior_mu, prior_logvar, kl):
        elements = kl_per_dimension(mu, logvar, prior_mu, prior_logvar)
        penalty = free_bits_kl(elements, self.free_bits)
        if self.reduction == "sum":
            penalty = penalty * mu.shape[0]
        recon_r = reduce_batch(recon, self.reduction)
        kl_r = reduce_batch(per_sample_sum(elements) if kl is None else kl, self.reduction)
        return ELBOParts(recon_r + self.beta * penalty, recon_r, kl_r, penalty)

    def extra_repr(self):
        options = f"likelihood={self.likelihood!r}, beta={self.beta}, free_bits={self.free_bits}, "
        if self.likelihood == "gaussian":
            lv = self.obs_logvar
            learned = isinstance(lv, nn.Parameter)
            value = lv if isinstance(lv, float) else f"tensor of shape {tuple(lv.shape)}"
            options += f"obs_logvar={value}, learn_obs_logvar={learned}, "
        return options + f"reduction={self.reduction!r}"


def _check_per_sample_kl(kl, x_hat) -> None:
    """``kl=`` must be the per-sample KL [B]: a [B, 1] one would broadcast the loss to [B, B]
    and a batch mean would stand for every sample."""
    check_tensor(kl, "kl")
    batch = x_hat.shape[0] if x_hat.dim() else 1
    if kl.shape != (batch,):
        raise ValueError(
            f"kl must be the per-sample KL of shape [{batch}] (reparameterize_kl's, or gaussian_kl's with "
            f"reduction='none'), got {tuple(kl.shape)}"
        )
    if kl.device != x_hat.device:
        raise ValueError(f"kl must be on x_hat's device {x_hat.device}, got {kl.device}")
