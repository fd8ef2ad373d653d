"""The package's own exp and expm1 (csrc/vae_math.h; vae_ext/reference.py repeats them step
for step and tests/test_kl_sum_order.py checks the kernels' KL against it bit for bit): error
in ulps against a wider reference, on a dense sample of each range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_ext import reference

CASES = {
    # dtype: (range, wider numpy type, max ulp of exp, of e^(x/2), of expm1)
    torch.float32: ((-200.0, 180.0), np.float64, 1.01, 1.01, 4.0),
    torch.float64: ((-1400.0, 1400.0), np.longdouble, 1.0, 1.0, 4.0),
}


def _ulps(got: torch.Tensor, exact: np.ndarray, numpy_dtype) -> np.ndarray:
    """|got - exact| in units of the spacing of the dtype at the exact value."""
    with np.errstate(over="ignore"):  # past the dtype's range: not counted
        rounded = exact.astype(numpy_dtype)
    spacing = np.spacing(np.abs(rounded)).astype(exact.dtype)
    finite = np.isfinite(rounded) & (np.abs(rounded) >= np.finfo(numpy_dtype).tiny)
    err = np.abs(got.numpy().astype(exact.dtype) - exact) / spacing
    return err[finite]


@pytest.mark.parametrize("dtype", list(CASES), ids=str)
def test_exp_and_expm1_error_in_ulps(dtype):
    (lo, hi), wide, exp_ulps, half_ulps, expm1_ulps = CASES[dtype]
    gen = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.linspace(lo, hi, 1_000_001, dtype=torch.float64),
            torch.empty(200_000, dtype=torch.float64).uniform_(-1, 1, generator=gen) ** 7,  # near 0
        ]
    ).to(dtype)
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    xw = x.numpy().astype(wide)
    assert _ulps(reference.exp_of(x), np.exp(xw), numpy_dtype).max() <= exp_ulps
    exp_half, expm1 = reference.half_exp(x)
    assert _ulps(exp_half, np.exp(xw / 2), numpy_dtype).max() <= half_ulps
    assert _ulps(expm1, np.expm1(xw), numpy_dtype).max() <= expm1_ulps


@pytest.mark.parametrize("dtype", list(CASES), ids=str)
def test_exp_edges(dtype):
    info = torch.finfo(dtype)
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e4, -1e4], dtype=dtype)
    e = reference.exp_of(x)
    assert torch.isnan(e[0]) and e[1] == float("inf") and e[2] == 0 and e[3] == 1 and e[4] == 1
    assert e[5] == float("inf") and e[6] == 0
    _, em1 = reference.half_exp(x)
    assert torch.isnan(em1[0]) and em1[1] == float("inf") and em1[2] == -1 and em1[3] == 0
    # The largest finite results and the subnormal range stay finite and exact to an ulp.
    big = torch.tensor([info.max], dtype=torch.float64).log().to(dtype) - 0.01
    assert torch.isfinite(reference.exp_of(big)).all()


@pytest.mark.parametrize(
    ("dtype", "int_dtype", "bias", "mantissa", "bits"),
    [(torch.float32, torch.int32, 127, 23, 7), (torch.float64, torch.int64, 1023, 52, 10)],
    ids=["float32", "float64"],
)
def test_power_of_two_equals_the_bit_cast(dtype, int_dtype, bias, mantissa, bits):
    # The reference's 2^n without a dtype view (used where vmap cannot batch one, torch 2.11)
    # must give the kernels' bit-cast floats for every n its exp can need, and beyond.
    limit = 1 << bits
    n = torch.arange(1 - limit, limit, dtype=int_dtype)
    n = n[(n + bias > 0) & (n + bias < 2 * bias + 1)]  # normal numbers only, as in exp
    want = ((n + bias) << mantissa).view(dtype)
    assert torch.equal(reference._power_of_two(n, dtype, bits), want)
