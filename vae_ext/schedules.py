"""β schedules for KL warm-up: ``schedule(step) -> β`` with step counted in optimizer steps.

* ``ConstantBeta(beta)``: no warm-up.
* ``LinearWarmup(beta, warmup_steps)``: β rises linearly from 0 to ``beta`` over the first
  warmup_steps steps, then stays (Bowman et al. 2016).
* ``CyclicalBeta(beta, cycle_steps, ramp_fraction=0.5)``: the linear ramp repeated every
  cycle_steps steps; within a cycle β rises over the first ramp_fraction of it, then stays at
  ``beta`` (Fu et al. 2019).

Usage: ``model.beta = schedule(step)`` before each step (``VAE.beta`` / ``ELBOLoss.beta``).
"""

from __future__ import annotations

import math

from ._numerics import check_choice, check_count, check_non_negative

WARMUPS = ("none", "linear", "cyclical")


class ConstantBeta:
    def __init__(self, beta: float = 1.0) -> None:
        self.beta = check_non_negative(beta, "beta")

    def __call__(self, step: int) -> float:
        return self.beta

    def __repr__(self):
        return f"ConstantBeta(beta={self.beta})"


class LinearWarmup:
    def __init__(self, beta: float = 1.0, warmup_steps: int = 1000) -> None:
        self.beta = check_non_negative(beta, "beta")
        self.warmup_steps = check_count(warmup_steps, "warmup_steps")

    def __call__(self, step: int) -> float:
        return self.beta * min(1.0, max(step, 0) / self.warmup_steps)

    def __repr__(self):
        return f"LinearWarmup(beta={self.beta}, warmup_steps={self.warmup_steps})"


class CyclicalBeta:
    def __init__(self, beta: float = 1.0, cycle_steps: int = 1000, ramp_fraction: float = 0.5) -> None:
        self.beta = check_non_negative(beta, "beta")
        self.cycle_steps = check_count(cycle_steps, "cycle_steps")
        if isinstance(ramp_fraction, bool) or not isinstance(ramp_fraction, (int, float)):
            raise TypeError(f"ramp_fraction must be a number, got {type(ramp_fraction).__name__}")
        if not (math.isfinite(ramp_fraction) and 0.0 < ramp_fraction <= 1.0):
            raise ValueError(f"ramp_fraction must be in (0, 1], got {ramp_fraction}")
        self.ramp_fraction = float(ramp_fraction)

    def __call__(self, step: int) -> float:
        phase = (max(step, 0) % self.cycle_steps) / self.cycle_steps
        return self.beta * min(1.0, phase / self.ramp_fraction)

    def __repr__(self):
        return f"CyclicalBeta(beta={self.beta}, cycle_steps={self.cycle_steps}, ramp_fraction={self.ramp_fraction})"


def make_beta_schedule(
    kind: str,
    beta: float,
    total_steps: int,
    *,
    warmup_fraction: float = 0.25,
    cycles: int = 4,
    ramp_fraction: float = 0.5,
) -> ConstantBeta | LinearWarmup | CyclicalBeta:
    """The schedule the command line names: "none", "linear" (warm-up over warmup_fraction of
    total_steps) or "cyclical" (``cycles`` cycles over total_steps; ValueError when that leaves
    a cycle fewer than 2 steps)."""
    check_choice(kind, WARMUPS, "warmup")
    total_steps = max(int(total_steps), 1)
    if kind == "none":
        return ConstantBeta(beta)
    if kind == "linear":
        return LinearWarmup(beta, max(1, round(warmup_fraction * total_steps)))
    cycles = max(int(cycles), 1)
    if total_steps < 2 * cycles:  # a 1-step cycle never leaves its first step: β would be 0 throughout
        raise ValueError(
            f"a cyclical schedule of {cycles} cycles needs at least {2 * cycles} steps (2 per cycle), "
            f"got total_steps={total_steps}"
        )
    return CyclicalBeta(beta, total_steps // cycles, ramp_fraction)
