"""The functional API (docs/design.md section 3)."""

from __future__ import annotations

import torch

from . import _ops
from ._numerics import check_reduction, reduce_batch


def _prior(p, mu, name):
    """None for the standard prior's value 0, a tensor broadcastable to mu otherwise."""
    if p is None or isinstance(p, torch.Tensor):
        if p is not None and p.is_floating_point() and p.dtype != mu.dtype:
            return p.to(mu.dtype)
        return p
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        return None if p == 0 else torch.full((), float(p), dtype=mu.dtype, device=mu.device)
    raise TypeError(f"{name} must be None, a float or a tensor, got {type(p).__name__}")


def _randint_seed(device, generator):
    return torch.randint(2**63 - 1, (), dtype=torch.int64, device=device, generator=generator)


_GENERATOR_UNDER_COMPILE = (
    "vae_ext: torch.compile cannot trace a draw from a user-supplied generator= (a graph break). "
    "Omit generator= inside compiled code: ε then comes from the default generator with no break, "
    "reproducible under torch.manual_seed"
)


def draw_seed(device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Philox seed in [0, 2^63 - 1) on ``device``: ``torch.randint`` from ``generator``
    or the device's default generator.

    With the default generator the draw is traced by torch.compile (no graph break) and batched
    by ``vmap(randomness=...)``; a user generator is a graph break under torch.compile. See
    docs/design.md, "Randomness", for how eager and compiled streams relate.
    """
    if generator is not None and torch.compiler.is_compiling():
        # Only under tracing, where torch._dynamo is loaded already (importing it costs seconds).
        torch._dynamo.graph_break(_GENERATOR_UNDER_COMPILE)
    return _randint_seed(device, generator)


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = mu + eps * exp(logvar / 2); eps drawn in the kernel when not given."""
    ops = _ops.active()
    if eps is None:
        return ops.reparameterize_sampled(mu, logvar, draw_seed(mu.device, generator))
    return ops.reparameterize(mu, logvar, eps)


def gaussian_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_mu: float | torch.Tensor | None = None,
    prior_logvar: float | torch.Tensor | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar))) summed over all non-batch dims.

    ``reduction``: "none" gives the per-sample KL [B], "sum" and "mean" reduce over the
    batch. The KL is float32 for float16/bfloat16 inputs (float64 for float64).
    """
    check_reduction(reduction)
    kl = _ops.active().gaussian_kl(
        mu, logvar, _prior(prior_mu, mu, "prior_mu"), _prior(prior_logvar, mu, "prior_logvar")
    )
    return reduce_batch(kl, reduction)


def reparameterize_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None = None,
    prior_mu: float | torch.Tensor | None = None,
    prior_logvar: float | torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample z and compute the KL in one pass; returns (z, kl)."""
    check_reduction(reduction)
    seed = draw_seed(mu.device, generator) if eps is None else None
    z, kl = _ops.active().reparameterize_kl(
        mu, logvar, eps, seed, _prior(prior_mu, mu, "prior_mu"), _prior(prior_logvar, mu, "prior_logvar")
    )
    return z, reduce_batch(kl, reduction)
