"""Numeric conventions shared by every module: the compute dtype, log(2π), the Gaussian
log-density, batch reductions and the choice check."""

from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)
LOG_2PI = math.log(2 * math.pi)
REDUCTIONS = ("none", "mean", "sum")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype math and sums run in: float32 for float16 / bfloat16, the input's otherwise.

    The kernels (csrc/vae_math.h), the reference, the losses and the distributions all follow
    this rule, so the KL of half-precision inputs is a float32 tensor.
    """
    return torch.float32 if dtype in HALF_DTYPES else dtype


def to_compute(t: torch.Tensor) -> torch.Tensor:
    """``t`` in its compute dtype (itself when that is already its dtype)."""
    return t.float() if t.dtype in HALF_DTYPES else t


def choice_error(value, choices, name: str) -> ValueError:
    return ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_choice(value, choices, name: str):
    """``value`` when it is one of ``choices`` (strings), else ValueError naming the argument."""
    if not isinstance(value, str) or value not in choices:
        raise choice_error(value, choices, name)
    return value


def check_non_negative(value, name: str) -> float:
    """A finite number >= 0 as a float, else TypeError (not a number) / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_count(value, name: str, minimum: int = 1) -> int:
    """An int >= minimum, else TypeError (not an int) / ValueError (too small) naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_reduction(reduction: str) -> str:
    return check_choice(reduction, REDUCTIONS, "reduction")


def log_normal(x: torch.Tensor, mean: torch.Tensor | None = None, logvar: torch.Tensor | float | None = None):
    """log N(x | mean, exp(logvar)) element by element, the one Gaussian log-density of the
    package; ``mean`` / ``logvar`` None mean 0. Callers pass compute-dtype tensors."""
    d = x if mean is None else x - mean
    if logvar is None:
        return -0.5 * (d * d + LOG_2PI)
    if isinstance(logvar, torch.Tensor):
        return -0.5 * (d * d * torch.exp(-logvar) + logvar + LOG_2PI)
    return -0.5 * (d * d * math.exp(-logvar) + (logvar + LOG_2PI))


def rows(t: torch.Tensor) -> torch.Tensor:
    """t [B, ...] as [B, prod(...)]: reshape(B, -1) cannot size an empty batch."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    """t [B, ...] summed over every non-batch dimension: [B]."""
    return rows(t).sum(dim=1)


def reduce_batch(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """A per-sample [B] tensor reduced over the batch: 'none', 'mean' or 'sum'."""
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()
