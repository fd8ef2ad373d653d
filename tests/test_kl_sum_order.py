"""The per-sample KL is one deterministic function: the summation order of csrc/row_sum.h.

The compiled CPU kernels and the pure-PyTorch reference give the same bits for every dtype,
row length, prior, layout, thread count and set of requested outputs; the reference's order
is checked against the written definition term by term.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DTYPES, dtype_id, generator, needs_compiled, randn

from vae_ext import reference

# Short, odd, prime, around the leaf (128) and chunk (512) sizes and powers of two, long.
ROW_LENGTHS = (
    *range(1, 34),
    47,
    63,
    64,
    65,
    97,
    127,
    128,
    129,
    255,
    256,
    257,
    383,
    511,
    512,
    513,
    640,
    1009,
    1023,
    1024,
    1025,
    2047,
    2048,
    2049,
    3001,
    4095,
    4097,
    100000,
)


def definition_sum(terms: np.ndarray) -> np.floating:
    """csrc/row_sum.h's definition, written out one add at a time (numpy scalars round each)."""
    dtype = terms.dtype.type
    n = len(terms)
    leaves = []
    for f in range(0, n, 128):
        rows = [[terms[f + 16 * r + q] if f + 16 * r + q < n else dtype(0) for q in range(16)] for r in range(8)]
        while len(rows) > 1:
            rows = [[rows[2 * i][q] + rows[2 * i + 1][q] for q in range(16)] for i in range(len(rows) // 2)]
        lanes = rows[0]
        while len(lanes) > 1:
            lanes = [lanes[2 * i] + lanes[2 * i + 1] for i in range(len(lanes) // 2)]
        leaves.append(lanes[0])
    if not leaves:
        return dtype(0)
    while len(leaves) & (len(leaves) - 1):
        leaves.append(dtype(0))
    while len(leaves) > 1:
        leaves = [leaves[2 * i] + leaves[2 * i + 1] for i in range(len(leaves) // 2)]
    return leaves[0]


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=dtype_id)
@pytest.mark.parametrize("n", (1, 5, 16, 17, 100, 128, 129, 300, 640, 1000, 2049))
def test_reference_order_is_the_definition(dtype, n):
    terms = randn((2, n), dtype, generator(n), 3.0).abs()
    got = reference.row_sum(terms)
    for row in range(2):
        expected = definition_sum(terms[row].numpy())
        assert got[row].item() == expected, (row, got[row].item(), expected)


def test_reference_order_differs_from_a_plain_sum():
    # The check above could not fail if every order gave the same bits here.
    terms = randn((1, 3001), torch.float32, generator(1), 10.0).abs()
    sequential = np.float32(0)
    for t in terms[0].numpy():
        sequential = sequential + t
    assert reference.row_sum(terms).item() != sequential


def _kl_inputs(rows, cols, dtype, seed, prior):
    gen = generator(seed)
    mu = randn((rows, cols), dtype, gen, 1.5)
    logvar = randn((rows, cols), dtype, gen, 2.0)
    if prior == "none":
        return mu, logvar, None, None
    if prior == "scalar":
        return mu, logvar, torch.tensor(0.3, dtype=dtype), torch.tensor(-0.7, dtype=dtype)
    return mu, logvar, randn((cols,), dtype, gen, 0.5), randn((rows, cols), dtype, gen, 0.5)


def _assert_same_bits(got, expected):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    same = (got == expected) | (torch.isnan(got) & torch.isnan(expected))
    if not bool(same.all()):
        bad = (~same).nonzero()[0].item()
        raise AssertionError(f"row {bad}: {got[bad].item()!r} != {expected[bad].item()!r}")


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("prior", ("none", "scalar", "mixed"))
def test_compiled_cpu_kl_is_the_reference_to_the_bit(dtype, prior):
    for cols in ROW_LENGTHS:
        rows = 1 if cols > 10000 else 3
        args = _kl_inputs(rows, cols, dtype, cols, prior)
        _assert_same_bits(torch.ops.vae_ext.gaussian_kl(*args), reference.gaussian_kl(*args))


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_kl_bits_do_not_depend_on_requested_outputs_or_eps(dtype):
    ops = torch.ops.vae_ext
    for cols in (7, 130, 1000, 4097):
        mu, logvar, pm, plv = _kl_inputs(5, cols, dtype, cols, "mixed")
        kl = ops.gaussian_kl(mu, logvar, pm, plv)
        seed = torch.tensor([cols])
        _, kl_sampled = ops.reparameterize_kl(mu, logvar, None, seed, pm, plv)
        # A misaligned eps (a view one element into its storage) changes nothing either.
        eps = torch.randn(5 * cols + 1, generator=generator(2)).to(dtype)[1:].view(5, cols)
        _, kl_given = ops.reparameterize_kl(mu, logvar, eps, None, pm, plv)
        _assert_same_bits(kl_sampled, kl)
        _assert_same_bits(kl_given, kl)


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_kl_bits_do_not_depend_on_thread_count(dtype):
    cases = [_kl_inputs(rows, cols, dtype, cols, "none") for rows, cols in ((64, 33), (37, 700), (9, 5000), (300, 8))]
    previous = torch.get_num_threads()
    try:
        results = {}
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results[threads] = [torch.ops.vae_ext.gaussian_kl(*args) for args in cases]
    finally:
        torch.set_num_threads(previous)
    for args, one, two, four in zip(cases, results[1], results[2], results[4]):
        _assert_same_bits(two, one)
        _assert_same_bits(four, one)
        _assert_same_bits(one, reference.gaussian_kl(*args))


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_strided_and_4d_rows_sum_in_the_same_order(dtype):
    gen = generator(11)
    h = randn((6, 2 * 515), dtype, gen, 1.5)
    mu, logvar = h.chunk(2, dim=1)  # strided rows of 515
    assert not mu.is_contiguous()
    _assert_same_bits(torch.ops.vae_ext.gaussian_kl(mu, logvar, None, None), reference.gaussian_kl(mu, logvar))
    _assert_same_bits(
        torch.ops.vae_ext.gaussian_kl(mu, logvar, None, None),
        torch.ops.vae_ext.gaussian_kl(mu.contiguous(), logvar.contiguous(), None, None),
    )
    mu4, lv4 = randn((3, 4, 9, 7), dtype, gen), randn((3, 4, 9, 7), dtype, gen)
    _assert_same_bits(
        torch.ops.vae_ext.gaussian_kl(mu4, lv4, None, None),
        reference.gaussian_kl(mu4.reshape(3, -1), lv4.reshape(3, -1)),
    )


def test_kl_terms_are_never_negative_zero():
    # row_sum.h pads with +0 and may skip the pads: exact only because no term is -0.
    zero = torch.tensor([-0.0, 0.0])
    for dtype in (torch.float32, torch.float64):
        mu, lv = (t.to(dtype) for t in torch.meshgrid(zero, zero, indexing="ij"))
        standard = reference.kl_elementwise(mu, lv).flatten()
        terms = torch.cat([standard, reference.kl_elementwise(mu, lv, mu, lv).flatten()])
        assert not torch.signbit(terms).any()
