"""The functional API (docs/design.md section 3).

Every argument after ``mu`` and ``logvar`` is keyword-only, so that no position means eps in
one function and a prior in another. The checks run once: the kernels check what they read,
and ``_args.explain`` names the argument only on the error path.
"""

from __future__ import annotations

import torch

from . import _ops
from ._args import as_prior, explain, generator_device
from ._numerics import check_reduction, reduce_batch

# What a call into the ops ends in when an argument is not a dense floating-point tensor.
_UNNAMED_ERRORS = (AttributeError, RuntimeError, NotImplementedError)

_GENERATOR_UNDER_COMPILE = (
    "vae_ext: torch.compile cannot trace a draw from a user-supplied generator= (a graph break). "
    "Omit generator= inside compiled code: ε then comes from the default generator with no break, "
    "reproducible under torch.manual_seed"
)


def _randint_seed(device, generator):
    return torch.randint(2**63 - 1, (), dtype=torch.int64, device=device, generator=generator)


def draw_seed(device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Philox seed in [0, 2^63 - 1) on ``device``: ``torch.randint`` from ``generator``
    or the device's default generator.

    ``generator`` may live on another device than ``device`` (as diffusers allows: a CPU
    generator for CUDA latents): the seed is drawn on the generator's device and moved. With
    the default generator the draw is traced by torch.compile (no graph break) and batched by
    ``vmap(randomness=...)``; a user generator is a graph break under torch.compile. See
    docs/design.md, "Randomness", for how eager and compiled streams relate.
    """
    own_device = generator_device(generator, device)
    if generator is not None and torch.compiler.is_compiling():
        # Only under tracing, where torch._dynamo is loaded already (importing it costs seconds).
        torch._dynamo.graph_break(msg=_GENERATOR_UNDER_COMPILE)
    if own_device is not None:
        return _randint_seed(own_device, generator).to(device)
    return _randint_seed(device, generator)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z = mu + eps * exp(logvar / 2); eps drawn in the kernel when not given."""
    try:
        ops = _ops.active()
        if eps is None:
            return ops.reparameterize_sampled(mu, logvar, draw_seed(mu.device, generator))
        return ops.reparameterize(mu, logvar, eps)
    except _UNNAMED_ERRORS as error:
        explain(error, mu=mu, logvar=logvar, eps=eps)
        raise


def gaussian_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    prior_mu: float | torch.Tensor | None = None,
    prior_logvar: float | torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar))) summed over all non-batch dims.

    ``reduction``: "none" gives the per-sample KL [B], "sum" and "mean" reduce over the
    batch. The KL is float32 for float16/bfloat16 inputs (float64 for float64).
    """
    check_reduction(reduction)
    pm = plv = None
    try:
        pm, plv = as_prior(prior_mu, mu, "prior_mu"), as_prior(prior_logvar, mu, "prior_logvar")
        kl = _ops.active().gaussian_kl(mu, logvar, pm, plv)
    except _UNNAMED_ERRORS as error:
        explain(error, mu=mu, logvar=logvar, prior_mu=pm, prior_logvar=plv)
        raise
    return reduce_batch(kl, reduction)


def reparameterize_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    prior_mu: float | torch.Tensor | None = None,
    prior_logvar: float | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample z and compute the KL in one pass; returns (z, kl)."""
    check_reduction(reduction)
    pm = plv = None
    try:
        pm, plv = as_prior(prior_mu, mu, "prior_mu"), as_prior(prior_logvar, mu, "prior_logvar")
        seed = draw_seed(mu.device, generator) if eps is None else None
        z, kl = _ops.active().reparameterize_kl(mu, logvar, eps, seed, pm, plv)
    except _UNNAMED_ERRORS as error:
        explain(error, mu=mu, logvar=logvar, eps=eps, prior_mu=pm, prior_logvar=plv)
        raise
    return z, reduce_batch(kl, reduction)
