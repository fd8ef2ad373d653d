"""Rows of the training-step benchmark and the comparisons between them (from round times only)."""

from __future__ import annotations

import statistics


def impl_row(model_name, size, impl) -> dict:
    row = {
        "model": model_name,
        "batch": size.batch,
        "sample": list(size.sample),
        "latent_shape": list(size.latent),
        "mode": impl.mode,
        "latent": impl.latent,
        "first_step_ms": impl.first_step_s * 1e3,
        "saved_bytes": impl.saved_bytes,
        "peak_bytes": impl.peak_bytes,
    }
    if impl.error is not None:
        return {**row, "error": impl.error, "median_ms": None}
    times = [t for block in impl.rounds for t in block]
    round_medians = [statistics.median(block) for block in impl.rounds]
    median = statistics.median(times)
    return {
        **row,
        "median_ms": median * 1e3,
        "min_ms": min(times) * 1e3,
        "round_median_ms": [t * 1e3 for t in round_medians],
        # (slowest - fastest round median) / median: how much the same work moved between rounds
        "round_spread": (max(round_medians) - min(round_medians)) / median,
        "steps": len(times),
    }


def _verdict(low, high):
    if low > 1:
        return "slower"
    if high < 1:
        return "faster"
    return "within noise"


def compare(rows) -> list[dict]:
    """Per (model, mode): vae_ext's step time over the eager latent layer's, round by round (the
    two ran in the same rounds), its range over the rounds (the measured noise), whether every
    round agrees (a verdict), and the share of the latent layer's cost (eager - free) removed."""
    by_key = {(r["model"], r["mode"], r["latent"]): r for r in rows if r.get("median_ms")}
    out = []
    for model, mode in dict.fromkeys((r["model"], r["mode"]) for r in rows):
        eager, ours, free = (by_key.get((model, mode, name)) for name in ("eager", "vae_ext", "free"))
        if eager is None or ours is None:
            continue
        ratios = [a / b for a, b in zip(ours["round_median_ms"], eager["round_median_ms"])]
        entry = {
            "model": model,
            "mode": mode,
            "vae_ext_over_eager": statistics.median(ratios),
            "round_ratio_min": min(ratios),
            "round_ratio_max": max(ratios),
            "verdict": _verdict(min(ratios), max(ratios)),
        }
        if free is not None:
            cost = eager["median_ms"] - free["median_ms"]
            entry["latent_cost_ms"] = cost
            entry["share_removed"] = (eager["median_ms"] - ours["median_ms"]) / cost if cost > 0 else None
            # The latent layer's cost is only measured if it exceeds how far the free step moved between rounds.
            entry["latent_cost_above_noise"] = cost > free["round_spread"] * free["median_ms"]
        out.append(entry)
    return out
