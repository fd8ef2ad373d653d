"""The in-kernel ε sampler: Philox4x32-10, its normals, determinism and statistics."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from helpers import DTYPES, dtype_id, needs_compiled, seed_tensor

import vae_ext
from vae_ext import _ops, reference

# Random123's published known-answer vectors for philox4x32_10 (kat_vectors):
# counter (4 words), key (2 words) -> output (4 words).
PHILOX_KAT = (
    ((0x00000000,) * 4, (0x00000000,) * 2, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
)

SEEDS = (0, 1, 42, -1, -(2**63), 2**63 - 1, 0x0123456789ABCDEF, -987654321)
SAMPLE_SHAPES = ((1, 1), (1, 5), (3, 1), (2, 1023), (5, 257), (2, 3, 4, 5), (7,))
STAT_SIZE = 2**20
ON_EVERY_DEVICE = True


def sampled_eps(ops, seed, shape, dtype=torch.float32, device="cpu"):
    """ε of an op set, recovered exactly (on the CPU): z = 0 + ε·exp(0) = ε."""
    zeros = torch.zeros(shape, dtype=dtype, device=device)
    return ops.reparameterize_sampled(zeros, zeros, seed_tensor(seed, device)).cpu()


# --------------------------------------------------------------------------- Philox


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_philox_known_answer_vectors(counter, key, expected):
    words = tuple(torch.tensor([c], dtype=torch.int64) for c in counter)
    out = reference.philox4x32_10(words, key)
    assert tuple(int(w) for w in out) == expected


def test_philox_vectorised_matches_scalar_calls():
    counters = [(i * 2654435761) & 0xFFFFFFFF for i in range(64)]
    key = (0xDEADBEEF, 0x01234567)
    batch = reference.philox4x32_10(tuple(torch.tensor(counters, dtype=torch.int64) for _ in range(4)), key)
    for i, c in enumerate(counters):
        one = reference.philox4x32_10(tuple(torch.tensor([c], dtype=torch.int64) for _ in range(4)), key)
        assert tuple(int(w[0]) for w in one) == tuple(int(w[i]) for w in batch)


@pytest.mark.parametrize("seed", (0, -1, 2**63 - 1, -(2**63)))
def test_philox_key_splits_the_64_bit_seed(seed):
    k0, k1 = reference.philox_key(seed)
    assert 0 <= k0 < 2**32 and 0 <= k1 < 2**32
    assert (k1 << 32) | k0 == seed % 2**64


# --------------------------------------------------------------------------- log / sincos accuracy


def every_sampler_uniform():
    """All 2^23 values uniform_open01 can return: (2k + 1) 2^-24."""
    k = torch.arange(2**23, dtype=torch.int64)
    return reference.uniform_open01(k << 9)


def ulp_float32(x64):
    """The float32 ulp at |x| for float64 values x (the gap above |x| rounded to float32)."""
    x = x64.float().abs()
    return (torch.nextafter(x, torch.full_like(x, math.inf)) - x).double()


def test_uniform_open01_covers_the_open_interval():
    u = every_sampler_uniform()
    assert u.min().item() == 2.0**-24 and u.max().item() == 1.0 - 2.0**-24
    assert torch.all(u[1:] > u[:-1])


def test_log_positive_within_one_ulp_on_every_sampler_input():
    u = every_sampler_uniform()
    exact = torch.log(u.double())
    error_ulps = (reference.log_positive(u).double() - exact).abs() / ulp_float32(exact)
    assert error_ulps.max().item() <= 1.0


def test_log_positive_on_wider_range():
    x = torch.logspace(-37, 38, 100_003, dtype=torch.float64).float()
    exact = torch.log(x.double())
    error_ulps = (reference.log_positive(x).double() - exact).abs() / ulp_float32(exact)
    assert error_ulps.max().item() <= 1.0


def test_sincos_2pi_accuracy():
    # Every third sampler input (3 is coprime to the quadrant structure) and the quadrant edges.
    u = torch.cat((every_sampler_uniform()[::3], torch.tensor([0.0, 0.125, 0.25, 0.5, 0.75, 1.0])))
    angle = 2.0 * math.pi * u.double()
    s, c = reference.sincos_2pi(u)
    assert (s.double() - torch.sin(angle)).abs().max().item() <= 2e-7
    assert (c.double() - torch.cos(angle)).abs().max().item() <= 2e-7
    assert torch.all(s * s + c * c - 1.0 < 1e-6)


# --------------------------------------------------------------------------- compiled ε == reference ε


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SAMPLE_SHAPES, ids=str)
def test_compiled_eps_bit_identical_to_reference(kernels, seed, shape):
    eps = sampled_eps(kernels.ops, seed, shape, device=kernels.device)
    expected = reference.normals(seed, math.prod(shape)).reshape(shape)
    assert torch.equal(eps, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_compiled_eps_bit_identical_in_every_dtype(kernels, dtype):
    eps = sampled_eps(kernels.ops, 1234, (6, 37), dtype, kernels.device)
    assert torch.equal(eps, reference.normals(1234, 6 * 37).reshape(6, 37).to(dtype))


def test_compiled_eps_follows_logical_index_not_memory(kernels):
    seed = seed_tensor(99, kernels.device)
    h = torch.zeros(6, 2 * 33, device=kernels.device)
    mu, logvar = h.chunk(2, dim=1)
    assert not mu.is_contiguous()
    eps = kernels.reparameterize_sampled(mu, logvar, seed)
    assert torch.equal(eps.cpu(), reference.normals(99, 6 * 33).reshape(6, 33))
    transposed = torch.zeros(33, 6, device=kernels.device).t()  # inner dims not contiguous: still the logical order
    assert torch.equal(kernels.reparameterize_sampled(transposed, transposed, seed), eps)


def test_compiled_fused_and_backward_use_the_same_eps(kernels):
    seed = seed_tensor(-5, kernels.device)
    mu = torch.zeros(4, 19, device=kernels.device)
    z, _ = kernels.reparameterize_kl(mu, mu, None, seed, None, None)
    eps = reference.normals(-5, mu.numel()).reshape(mu.shape)
    assert torch.equal(z.cpu(), eps)
    grad_z = torch.full_like(mu, 2.0)  # d z / d logvar at logvar = 0 is ε / 2
    assert torch.equal(kernels.reparameterize_backward(grad_z, mu, None, seed).cpu(), eps)


def test_reference_normals_window_matches_full_stream():
    full = reference.normals(17, 64)
    for start in (0, 1, 3, 5, 30):
        assert torch.equal(reference.normals(17, 21, start=start), full[start : start + 21])


@needs_compiled
@pytest.mark.parametrize("threads", (1, 2, 4))
def test_result_independent_of_thread_count(threads):
    mu = torch.randn(513, 300, generator=torch.Generator().manual_seed(0))
    logvar = torch.randn(513, 300, generator=torch.Generator().manual_seed(1))
    seed = seed_tensor(2024)
    baseline = _ops.compiled.reparameterize_kl(mu, logvar, None, seed, None, None)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        z, kl = _ops.compiled.reparameterize_kl(mu, logvar, None, seed, None, None)
        grads = _ops.compiled.reparameterize_kl_backward(z, kl, mu, logvar, None, seed, None, None, False)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(z, baseline[0]) and torch.equal(kl, baseline[1])
    expected_grads = _ops.compiled.reparameterize_kl_backward(z, kl, mu, logvar, None, seed, None, None, False)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads))


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_z_different_seed_different_z(backend):
    mu = torch.randn(8, 16, generator=torch.Generator().manual_seed(3)).to(backend.device)
    logvar = torch.zeros_like(mu)
    z1 = backend.reparameterize_sampled(mu, logvar, seed_tensor(11, backend.device))
    z2 = backend.reparameterize_sampled(mu, logvar, seed_tensor(11, backend.device))
    z3 = backend.reparameterize_sampled(mu, logvar, seed_tensor(12, backend.device))
    assert torch.equal(z1, z2)
    assert (z1 != z3).float().mean().item() > 0.99


def test_backends_sample_identical_eps(kernels):
    eps = sampled_eps(kernels.ops, 31337, (9, 70), device=kernels.device)
    assert torch.equal(eps, sampled_eps(_ops.fallback, 31337, (9, 70)))


def test_manual_seed_is_honoured(api_backend):
    mu = torch.randn(4, 10, generator=torch.Generator().manual_seed(0)).to(api_backend.device)
    logvar = torch.zeros_like(mu)
    torch.manual_seed(123)
    first = vae_ext.reparameterize(mu, logvar)
    first_fused, _ = vae_ext.reparameterize_kl(mu, logvar)
    torch.manual_seed(123)
    assert torch.equal(vae_ext.reparameterize(mu, logvar), first)
    assert torch.equal(vae_ext.reparameterize_kl(mu, logvar)[0], first_fused)
    assert not torch.equal(first, first_fused)  # the global generator moved on between draws


def test_generator_argument_is_honoured(api_backend):
    device = api_backend.device
    mu = torch.zeros(3, 12, device=device)
    draws = [vae_ext.reparameterize(mu, mu, generator=torch.Generator(device).manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])
    seed = vae_ext.draw_seed(device, torch.Generator(device).manual_seed(5))
    assert torch.equal(draws[0].cpu(), reference.normals(int(seed), mu.numel()).reshape(mu.shape))


def test_draw_seed_uses_the_generator_only():
    torch.manual_seed(0)
    a = vae_ext.draw_seed("cpu", torch.Generator().manual_seed(8))
    torch.manual_seed(1)
    b = vae_ext.draw_seed("cpu", torch.Generator().manual_seed(8))
    assert a.dtype == torch.int64 and a.numel() == 1 and torch.equal(a, b)


def test_forced_fallback_in_subprocess_gives_same_z():
    script = (
        "import torch, vae_ext\n"
        "torch.manual_seed(77)\n"
        "mu = torch.linspace(-1, 1, 60).reshape(6, 10)\n"
        "z = vae_ext.reparameterize(mu, torch.zeros_like(mu))\n"
        "print(vae_ext.build_info()['backend'])\n"
        "print(' '.join(float(v).hex() for v in z.flatten()))\n"
    )
    env = dict(os.environ, VAE_EXT_FORCE_FALLBACK="1")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    backend_line, values_line = result.stdout.strip().splitlines()
    assert backend_line == "fallback"
    torch.manual_seed(77)
    mu = torch.linspace(-1, 1, 60).reshape(6, 10)
    z = vae_ext.reparameterize(mu, torch.zeros_like(mu))  # exp(0) = 1: z = mu + ε exactly rounded
    assert values_line.split() == [float(v).hex() for v in z.flatten()]


# --------------------------------------------------------------------------- statistics


def moments_tolerance(n, sigmas=6.0):
    """sigmas standard errors of (mean, variance, skewness, excess kurtosis) of n normals."""
    return tuple(sigmas * math.sqrt(v / n) for v in (1.0, 2.0, 6.0, 24.0))


def normal_cdf(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def ks_statistic(samples):
    """Kolmogorov-Smirnov distance between the empirical CDF of samples and N(0, 1)."""
    x, _ = torch.sort(samples.double())
    n = x.numel()
    cdf = normal_cdf(x)
    steps = torch.arange(n + 1, dtype=torch.float64) / n
    return torch.maximum((steps[1:] - cdf).abs().max(), (cdf - steps[:-1]).abs().max()).item()


def correlation(a, b):
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return ((a * b).mean() / (a.std() * b.std())).item()


@pytest.fixture(scope="module", params=("compiled", "fallback"))
def big_sample(request):
    if request.param == "compiled" and _ops.compiled is None:
        pytest.skip("the compiled extension vae_ext._C is not built")
    return sampled_eps(getattr(_ops, request.param), 20240917, (STAT_SIZE // 1024, 1024)).flatten().double()


def test_eps_moments(big_sample):
    n = big_sample.numel()
    tol_mean, tol_var, tol_skew, tol_kurt = moments_tolerance(n)
    mean = big_sample.mean().item()
    centred = big_sample - mean
    var = centred.pow(2).mean().item()
    skew = centred.pow(3).mean().item() / var**1.5
    excess_kurtosis = centred.pow(4).mean().item() / var**2 - 3.0
    assert abs(mean) < tol_mean
    assert abs(var - 1.0) < tol_var
    assert abs(skew) < tol_skew
    assert abs(excess_kurtosis) < tol_kurt


def test_eps_kolmogorov_smirnov(big_sample):
    # P(sqrt(n) D > t) ~ 2 exp(-2 t^2): t = 2.7 is a 1e-6 false-alarm rate.
    assert math.sqrt(big_sample.numel()) * ks_statistic(big_sample) < 2.7


def test_eps_tail_mass(big_sample):
    n = big_sample.numel()
    p = 2.0 * (1.0 - normal_cdf(torch.tensor(3.0, dtype=torch.float64)).item())
    observed = (big_sample.abs() > 3.0).double().mean().item()
    assert abs(observed - p) < 6.0 * math.sqrt(p * (1.0 - p) / n)
    assert big_sample.abs().max().item() < 6.0  # radius <= sqrt(-2 log 2^-24) = 5.77


@pytest.mark.parametrize("lag", (1, 2, 3, 4, 5))
def test_eps_neighbours_uncorrelated(big_sample, lag):
    # lag 1 pairs the two normals of one Box-Muller draw; their squares share the radius.
    tol = 6.0 / math.sqrt(big_sample.numel())
    a, b = big_sample[:-lag], big_sample[lag:]
    assert abs(correlation(a, b)) < tol
    assert abs(correlation(a * a, b * b)) < tol


@needs_compiled
@pytest.mark.parametrize("other_seed", (1, 2**32, -1))
def test_eps_streams_of_related_seeds_uncorrelated(other_seed):
    n = 2**18
    a = sampled_eps(_ops.compiled, 0, (n // 512, 512)).flatten()
    b = sampled_eps(_ops.compiled, other_seed, (n // 512, 512)).flatten()
    assert abs(correlation(a, b)) < 6.0 / math.sqrt(n)
