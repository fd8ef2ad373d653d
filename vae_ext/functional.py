"""The functional API (design.md section 3)."""

from __future__ import annotations

import torch

from . import _ops

_REDUCTIONS = ("none", "sum", "mean")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'none', 'sum', 'mean'; got {reduction!r}")


def _reduce(kl, reduction):
    if reduction == "none":
        return kl
    return kl.sum() if reduction == "sum" else kl.mean()


def _prior(p, mu, name):
    """None for the standard prior's value 0, a tensor broadcastable to mu otherwise."""
    if p is None or isinstance(p, torch.Tensor):
        if p is not None and p.is_floating_point() and p.dtype != mu.dtype:
            return p.to(mu.dtype)
        return p
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        return None if p == 0 else torch.full((), float(p), dtype=mu.dtype, device=mu.device)
    raise TypeError(f"{name} must be None, a float or a tensor, got {type(p).__name__}")


def _draw_seed_eager(device, generator):
    return torch.empty((), dtype=torch.int64, device=device).random_(generator=generator)


_GENERATOR_UNDER_COMPILE = (
    "vae_ext: torch.compile cannot trace a draw from a user-supplied generator= (a graph break). "
    "Omit generator= inside compiled code: ε then comes from the default generator with no break, "
    "reproducible under torch.manual_seed"
)
_draw_seed_from_generator = torch.compiler.disable(_draw_seed_eager, reason=_GENERATOR_UNDER_COMPILE)


def draw_seed(device, generator=None) -> torch.Tensor:
    """A fresh 63-bit Philox seed on ``device``, from ``generator`` or the device's default.

    Eager code draws it with ``Tensor.random_``. Under torch.compile and torch.func
    transforms, which cannot trace an in-place random op, it is ``torch.randint`` from the
    same generator: traced into the graph (no graph break), reproducible under
    ``torch.manual_seed``, batched by ``vmap(randomness=...)``. See docs/design.md,
    "Randomness", for how the streams relate.
    """
    if generator is not None:
        return _draw_seed_from_generator(device, generator)
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return torch.randint(0, 2**63 - 1, (), dtype=torch.int64, device=device)
    return _draw_seed_eager(device, None)


def reparameterize(mu, logvar, eps=None, *, generator=None):
    """z = mu + eps * exp(logvar / 2); eps drawn in the kernel when not given."""
    ops = _ops.active()
    if eps is None:
        return ops.reparameterize_sampled(mu, logvar, draw_seed(mu.device, generator))
    return ops.reparameterize(mu, logvar, eps)


def gaussian_kl(mu, logvar, prior_mu=None, prior_logvar=None, *, reduction="mean"):
    """KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar))) summed over all non-batch dims.

    ``reduction``: "none" gives the per-sample KL [B], "sum" and "mean" reduce over the
    batch. The KL is float32 for float16/bfloat16 inputs (float64 for float64).
    """
    _check_reduction(reduction)
    kl = _ops.active().gaussian_kl(
        mu, logvar, _prior(prior_mu, mu, "prior_mu"), _prior(prior_logvar, mu, "prior_logvar")
    )
    return _reduce(kl, reduction)


def reparameterize_kl(mu, logvar, eps=None, prior_mu=None, prior_logvar=None, *, generator=None, reduction="none"):
    """Sample z and compute the KL in one pass; returns (z, kl)."""
    _check_reduction(reduction)
    seed = draw_seed(mu.device, generator) if eps is None else None
    z, kl = _ops.active().reparameterize_kl(
        mu, logvar, eps, seed, _prior(prior_mu, mu, "prior_mu"), _prior(prior_logvar, mu, "prior_logvar")
    )
    return z, _reduce(kl, reduction)
