"""Result rows: one per (impl, op, pass, eps, dtype, shape), and the ratios between them."""

from __future__ import annotations

import math
import statistics

from .bytes import model_bytes
from .cases import dtype_name
from .timing import Timing


def _base_row(impl, op, pass_name, eps, dtype, shape):
    return {"impl": impl, "op": op, "pass": pass_name, "eps": eps, "dtype": dtype_name(dtype), "shape": list(shape)}


def timing_row(impl, op, pass_name, eps, dtype, shape, timing: Timing) -> dict:
    row = _base_row(impl, op, pass_name, eps, dtype, shape)
    median_s = timing.median_s
    nbytes = model_bytes(op, pass_name, eps, math.prod(shape), dtype.itemsize)
    quartiles = statistics.quantiles(timing.times, n=4) if len(timing.times) > 1 else [median_s] * 3
    row.update(
        median_ms=median_s * 1e3,
        gbps=nbytes / median_s / 1e9,
        bytes=nbytes,
        min_ms=min(timing.times) * 1e3,
        iqr_ms=(quartiles[2] - quartiles[0]) * 1e3,
        repetitions=timing.calls,
        block_calls=timing.block_calls,
        first_call_ms=timing.first_call_s * 1e3,
    )
    return row


def error_row(impl, op, pass_name, eps, dtype, shape, error: BaseException) -> dict:
    row = _base_row(impl, op, pass_name, eps, dtype, shape)
    message = f"{type(error).__name__}: {error}".strip()
    row.update(median_ms=None, gbps=None, error=message[:2000])
    return row


def case_key(row: dict) -> tuple:
    return (row["op"], row["pass"], row["eps"], row["dtype"], tuple(row["shape"]))


def ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def add_derived_fields(results: list[dict]) -> list[dict]:
    """frac_of_copy, frac_of_fresh (the case's fresh-output floor) and speedups vs eager / compile,
    from median_ms and gbps only."""
    copy_gbps = {(r["dtype"], tuple(r["shape"])): r["gbps"] for r in results if r["impl"] == "copy"}
    median_ms = {(r["impl"],) + case_key(r): r["median_ms"] for r in results}
    for row in results:
        if row["impl"] == "copy":
            continue
        key = case_key(row)
        row["frac_of_copy"] = ratio(row["gbps"], copy_gbps.get((row["dtype"], tuple(row["shape"]))))
        row["frac_of_fresh"] = ratio(median_ms.get(("fresh",) + key), row["median_ms"])
        row["speedup_vs_eager"] = ratio(median_ms.get(("eager",) + key), row["median_ms"])
        row["speedup_vs_compile"] = ratio(median_ms.get(("compile",) + key), row["median_ms"])
    return results
