"""Shared helpers of the vae_ext test suite: dtypes, tolerances, devices, inputs, float64
oracles and comparisons. Fixtures and hooks stay in tests/conftest.py.

The oracles compute in float64 on the CPU from the very values the op under test received
(inputs are drawn in float64 and rounded to the test dtype first), so the only error left is
the op's own: a tolerance per output dtype is enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_ext import _numerics, _ops, reference
from vae_ext._numerics import HALF_DTYPES as HALF_DTYPES  # re-exported for the test modules
from vae_ext._numerics import compute_dtype

DTYPES = _numerics.FLOAT_DTYPES

# (rtol, atol) for one value stored in `dtype` against a float64 oracle: about two roundings
# of the dtype (the compute type's error, then the cast to the output dtype).
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (4e-6, 4e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}

# D = 1, a D that is not a multiple of 4 (groups straddle rows), one row past 65536 elements
# (the CUDA kernels split it over blocks), 4-d latents and the usual small / medium MLP latents.
KERNEL_SHAPES = ((3, 1), (5, 7), (4, 1023), (2, 65536 + 3), (2, 3, 5, 7), (64, 32), (33, 512))


def skip_cuda_split_shape_on_cpu(backend, shape):
    """Shapes past 2^17 elements exist to make the CUDA kernels split rows over blocks; on the
    CPU their float64 reference costs seconds and the CPU row splits have their own tests
    (tests/test_kl_sum_order.py, tests/test_sampler.py), so they run on CUDA only."""
    if backend.device.type == "cpu" and math.prod(shape) > 1 << 17:
        pytest.skip("a CUDA block-split shape: CPU row splits are tested in tests/test_kl_sum_order.py")


PRIOR_KINDS = ("standard", "scalar_float", "scalar_tensor", "per_latent", "per_latent_keepdim", "full")

needs_compiled = pytest.mark.skipif(_ops.compiled is None, reason="the compiled extension vae_ext._C is not built")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# --------------------------------------------------------------------------- backends (op set x device)


@dataclass(frozen=True)
class Backend:
    """One place an op runs: an op set (``_ops.compiled`` or ``_ops.fallback``) on a device.

    Attribute access falls through to the op set, so ``backend.reparameterize(...)`` calls it.
    """

    name: str
    ops: object
    device: torch.device

    def __getattr__(self, name):
        return getattr(self.ops, name)


# The op-set x device pairs, as pytest params of the `backend` / `api_backend` fixtures
# (tests/conftest.py): the compiled CPU kernels, the pure-PyTorch fallback, and the compiled
# CUDA kernels (skipped with a reason without a GPU). Modules whose tests build their inputs
# on `backend.device` opt in to "cuda" with ON_EVERY_DEVICE = True. KERNEL_PARAMS: the
# compiled kernels alone, on each device.
BACKEND_PARAMS = (pytest.param("compiled", marks=needs_compiled), pytest.param("fallback"))
CUDA_PARAM = pytest.param("cuda", marks=(needs_compiled, needs_cuda))
DEVICE_PARAMS = (*BACKEND_PARAMS, CUDA_PARAM)
KERNEL_PARAMS = (BACKEND_PARAMS[0], CUDA_PARAM)


def make_backend(name):
    if name == "cuda":
        return Backend(name, _ops.compiled, torch.device("cuda"))
    return Backend(name, getattr(_ops, name), torch.device("cpu"))


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- inputs


def generator(seed):
    return torch.Generator().manual_seed(seed)


def randn(shape, dtype, gen, scale=1.0, shift=0.0, device="cpu"):
    """Normal values drawn in float64 (on the CPU, so equal on every device) and rounded to dtype."""
    return (torch.randn(shape, dtype=torch.float64, generator=gen) * scale + shift).to(dtype).to(device)


def latent(shape, dtype, seed=0, lv_scale=0.8, device="cpu"):
    """(mu, logvar) of a typical encoder output."""
    gen = generator(seed)
    return (
        randn(shape, dtype, gen, device=device),
        randn(shape, dtype, gen, scale=lv_scale, shift=-0.3, device=device),
    )


def grad_like(t, seed=1):
    """A random upstream gradient (never all ones), float64-drawn, in t's dtype, on t's device."""
    return randn(t.shape, t.dtype, generator(seed), shift=0.25, device=t.device)


def make_prior(kind, shape, dtype, seed=7, device="cpu"):
    """(prior_mu, prior_logvar) of one kind for latents of `shape`: None, floats or tensors."""
    gen = generator(seed)
    latent_shape = tuple(shape[1:])

    def draw(shape_):
        return randn(shape_, dtype, gen, 0.5, device=device), randn(shape_, dtype, gen, 0.5, device=device)

    if kind == "standard":
        return None, None
    if kind == "scalar_float":
        return 0.375, -0.625
    if kind == "scalar_tensor":
        return draw(())
    if kind == "per_latent":
        return draw(latent_shape)
    if kind == "per_latent_keepdim":
        return draw((1,) + latent_shape)
    if kind == "full":
        return draw(shape)
    raise ValueError(kind)


def as_prior_tensor(p, like):
    """A prior argument as the ops take it: None or a tensor of like's dtype and device."""
    if p is None or isinstance(p, torch.Tensor):
        return p
    return torch.tensor(p, dtype=like.dtype, device=like.device)


def tensor_priors(kind, shape, dtype, device="cpu"):
    """make_prior's (prior_mu, prior_logvar) as the ops take them: None or tensors."""
    like = torch.empty((), dtype=dtype, device=device)
    return tuple(as_prior_tensor(p, like) for p in make_prior(kind, shape, dtype, device=device))


def seed_tensor(value, device="cpu"):
    return torch.tensor(value, dtype=torch.int64, device=device)


# --------------------------------------------------------------------------- oracles


def f64(t):
    """float64 CPU copy of a tensor (or a Python float); None stays None."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double()
    return torch.tensor(float(t), dtype=torch.float64)


def batch_sum(t):
    """Sum over every non-batch dim: [B, ...] -> [B]."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:])).sum(dim=1)


def z_formula(mu, logvar, eps):
    return mu + eps * torch.exp(0.5 * logvar)


def kl_formula(mu, logvar, prior_mu=None, prior_logvar=None):
    """Per-sample KL from the textbook formula (docs/design.md section 2), in the inputs' dtype."""
    pmu = torch.zeros((), dtype=mu.dtype) if prior_mu is None else prior_mu
    plv = torch.zeros((), dtype=mu.dtype) if prior_logvar is None else prior_logvar
    d = mu - pmu
    elementwise = 0.5 * (plv - logvar + (torch.exp(logvar) + d * d) * torch.exp(-plv) - 1.0)
    return batch_sum(elementwise.expand(mu.shape))


def kl_distributions(mu, logvar, prior_mu=None, prior_logvar=None):
    """Per-sample KL from torch.distributions, in the inputs' dtype (differentiable)."""
    pmu = torch.zeros((), dtype=mu.dtype) if prior_mu is None else prior_mu
    plv = torch.zeros((), dtype=mu.dtype) if prior_logvar is None else prior_logvar
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(pmu.expand(mu.shape), torch.exp(0.5 * plv).expand(mu.shape))
    return batch_sum(kl_divergence(q, p))


def sampled_eps64(seed, like):
    """The sampler's ε for `like` in float64: the reference stream of float32 normals."""
    return reference.normals(int(seed), like.numel()).reshape(like.shape).double()


def fused_oracle(eps64, kl=kl_formula):
    """(z, kl) in float64 as a function of (mu, logvar, prior_mu, prior_logvar), for a given ε."""

    def oracle(mu, logvar, prior_mu, prior_logvar):
        return z_formula(mu, logvar, eps64), kl(mu, logvar, prior_mu, prior_logvar)

    return oracle


def float64_grads(fn, tensors, grad_outputs):
    """Gradients of fn(*float64 CPU leaves) against `tensors` (None entries are passed through)."""
    leaves = [None if t is None else f64(t).requires_grad_(True) for t in tensors]
    outputs = fn(*leaves)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    loss = sum((out * f64(g)).sum() for out, g in zip(outputs, grad_outputs) if g is not None)
    wanted = [leaf for leaf in leaves if leaf is not None]
    grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True, materialize_grads=True))
    return [None if leaf is None else next(grads) for leaf in leaves]


# --------------------------------------------------------------------------- comparisons


def assert_close(actual, expected, dtype, terms=1):
    """actual (an op output, on any device) matches a float64 oracle within dtype's tolerance.

    ``terms``: how many rounded values the output sums (a prior gradient summed over the
    batch, a KL summed over the latent); the absolute tolerance grows with it.
    """
    rtol, atol = TOLERANCES[dtype]
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    torch.testing.assert_close(actual.cpu().double(), expected.cpu().double(), rtol=rtol, atol=atol * terms)


def assert_kl_close(kl, expected, input_dtype, latent_size):
    """The per-sample KL (compute dtype) matches the float64 oracle: a sum of latent_size terms."""
    dtype = compute_dtype(input_dtype)
    rtol, atol = TOLERANCES[dtype]
    assert kl.dtype == dtype, f"KL dtype {kl.dtype}, expected {dtype}"
    torch.testing.assert_close(
        kl.cpu().double(), expected.cpu().double(), rtol=rtol, atol=atol * math.sqrt(latent_size)
    )


def tiny_autoencoder_kl(mode="plain", sample_size=8):
    """A seeded one-block diffusers AutoencoderKL with 4 latent channels, slicing or tiling on
    as ``mode`` says (tiles of ``sample_size`` pixels). diffusers is imported here: it is a test
    dependency that only these tests need."""
    import diffusers

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
    )
    if mode == "slicing":
        vae.enable_slicing()
    if mode == "tiling":
        vae.enable_tiling()
    return vae
