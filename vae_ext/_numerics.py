"""Numeric conventions shared by every module: the compute dtype, log(2π), batch reductions."""

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


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}; got {reduction!r}")
    return reduction


def reduce_batch(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """A per-sample [B] tensor reduced over the batch: 'none', 'mean' or 'sum'."""
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()
