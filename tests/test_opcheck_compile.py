"""torch.library.opcheck on every op, and torch.compile(fullgraph=True) against eager, for the
compiled kernels of every device (the `kernels` fixture, tests/conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close, compute_dtype, grad_like, latent, make_prior, needs_compiled, randn, seed_tensor

import vae_ext
from vae_ext import _ops

SHAPE = (4, 6)

# No compiled graph leaks from one test into the next (the fixture is in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def inputs(dtype=torch.float32, shape=SHAPE, prior="standard", grads=(), device="cpu"):
    """Named op inputs on device; the names in `grads` require grad."""
    mu, logvar = latent(shape, dtype, device=device)
    gen = torch.Generator().manual_seed(9)
    prior_mu, prior_logvar = make_prior(prior, shape, dtype, device=device)
    values = {
        "mu": mu,
        "logvar": logvar,
        "eps": randn(shape, dtype, gen, device=device),
        "grad_z": randn(shape, dtype, gen, device=device),
        "grad_kl": randn(shape[:1], compute_dtype(dtype), gen, device=device),
        "seed": seed_tensor(271828, device),
        "prior_mu": prior_mu,
        "prior_logvar": prior_logvar,
    }
    for name in grads:
        values[name].requires_grad_(True)
    return values


def strided_inputs(device):
    values = inputs(device=device)
    h = torch.cat((values["mu"], values["logvar"]), dim=1)
    values["mu"], values["logvar"] = h.chunk(2, dim=1)
    return values


def forward_cases(device="cpu"):
    """(id, op name, args) for the forward ops, on device."""
    ops = []
    for grads in ((), ("mu", "logvar"), ("logvar",)):
        v = inputs(grads=grads + ("eps",) if grads else (), device=device)
        ops.append(
            (f"reparameterize-{'-'.join(grads) or 'nograd'}", "reparameterize", (v["mu"], v["logvar"], v["eps"]))
        )
        v = inputs(grads=grads, device=device)
        ops.append(
            (f"sampled-{'-'.join(grads) or 'nograd'}", "reparameterize_sampled", (v["mu"], v["logvar"], v["seed"]))
        )
    for prior in ("standard", "scalar_tensor", "per_latent", "per_latent_keepdim", "full"):
        grads = ("mu", "logvar") if prior == "standard" else ("mu", "prior_mu", "prior_logvar")
        v = inputs(prior=prior, grads=grads, device=device)
        kl_args = (v["mu"], v["logvar"], v["prior_mu"], v["prior_logvar"])
        ops.append((f"kl-{prior}", "gaussian_kl", kl_args))
        ops.append((f"fused-eps-{prior}", "reparameterize_kl", (v["mu"], v["logvar"], v["eps"], None) + kl_args[2:]))
        ops.append((f"fused-seed-{prior}", "reparameterize_kl", (v["mu"], v["logvar"], None, v["seed"]) + kl_args[2:]))
    v = inputs(dtype=torch.bfloat16, shape=(3, 2, 2, 5), prior="per_latent", grads=("mu", "logvar"), device=device)
    ops.append(("fused-bf16-4d", "reparameterize_kl", (v["mu"], v["logvar"], None, v["seed"], v["prior_mu"], None)))
    v = inputs(dtype=torch.float16, shape=(3, 2, 2, 5), prior="full", device=device)
    ops.append(
        (
            "fused-f16-4d-full",
            "reparameterize_kl",
            (v["mu"], v["logvar"], None, v["seed"], v["prior_mu"], v["prior_logvar"]),
        )
    )
    v = inputs(dtype=torch.float64, grads=("mu",), device=device)
    ops.append(("kl-float64-nograd-logvar", "gaussian_kl", (v["mu"], v["logvar"], None, None)))
    v = strided_inputs(device)
    ops.append(("fused-strided", "reparameterize_kl", (v["mu"], v["logvar"], None, v["seed"], None, None)))
    return ops


def backward_cases(device="cpu"):
    """(id, op name, args) for the backward ops (no autograd of their own: no grads), on device."""
    v = inputs(prior="per_latent", device=device)
    mu, logvar, eps, seed = v["mu"], v["logvar"], v["eps"], v["seed"]
    gz, gk, pmu, plv = v["grad_z"], v["grad_kl"], v["prior_mu"], v["prior_logvar"]
    half = inputs(dtype=torch.float16, prior="full", device=device)
    return [
        ("rep-bwd-eps", "reparameterize_backward", (gz, logvar, eps, None)),
        ("rep-bwd-seed", "reparameterize_backward", (gz, logvar, None, seed)),
        ("fused-bwd-seed-prior", "reparameterize_kl_backward", (gz, gk, mu, logvar, None, seed, pmu, plv, True)),
        ("fused-bwd-eps-noprior", "reparameterize_kl_backward", (gz, gk, mu, logvar, eps, None, None, None, False)),
        ("fused-bwd-z-only", "reparameterize_kl_backward", (gz, None, mu, logvar, None, seed, None, None, False)),
        ("kl-bwd", "reparameterize_kl_backward", (None, gk, mu, logvar, None, None, pmu, None, True)),
        ("kl-bwd-noprior", "reparameterize_kl_backward", (None, gk, mu, logvar, None, None, None, None, False)),
        (
            "fused-bwd-half",
            "reparameterize_kl_backward",
            (half["grad_z"], half["grad_kl"], half["mu"], half["logvar"], None, half["seed"])
            + (half["prior_mu"], half["prior_logvar"], True),
        ),
    ]


def opcheck_cases(device="cpu"):
    return forward_cases(device) + backward_cases(device)


# Case ids, collected on the CPU; each test builds its case on its own device (CUDA tensors
# cannot be made at collection time).
OPCHECK_CASES = opcheck_cases()


@pytest.mark.parametrize("case", [c[0] for c in OPCHECK_CASES])
def test_opcheck(kernels, case):
    _, name, args = next(c for c in opcheck_cases(kernels.device) if c[0] == case)
    assert all(a.device.type == kernels.device.type for a in args if isinstance(a, torch.Tensor))
    torch.library.opcheck(getattr(torch.ops.vae_ext, name).default, args)


@needs_compiled
def test_every_op_is_opchecked():
    assert {case[1] for case in OPCHECK_CASES} == set(_ops.OP_NAMES)


# --------------------------------------------------------------------------- torch.compile


def vae_loss(mu, logvar, eps, prior_mu, prior_logvar, weight):
    z, kl = vae_ext.reparameterize_kl(
        mu, logvar, eps=eps, prior_mu=prior_mu, prior_logvar=prior_logvar, reduction="mean"
    )
    standard_kl = vae_ext.gaussian_kl(mu, logvar, prior_mu=0.5, reduction="sum")
    return z, (z * weight).sum() + kl + 0.1 * standard_kl


def sampled_loss(mu, logvar, prior_logvar, seed, weight):
    z, kl = torch.ops.vae_ext.reparameterize_kl(mu, logvar, None, seed, None, prior_logvar)
    z2 = torch.ops.vae_ext.reparameterize_sampled(mu, logvar, seed)
    return z, (z * weight).sum() + (z2 * z2).sum() + kl.mean()


def loss_and_grads(fn, leaves, *rest):
    z, loss = fn(*leaves, *rest)
    return (z.detach(), loss.detach(), *torch.autograd.grad(loss, leaves))


def assert_same_results(compiled, eager, dtype, terms=1):
    for c, e in zip(compiled, eager):
        assert_close(c, e.double(), dtype, terms)


@pytest.fixture
def compiled_api(monkeypatch):
    """The functional API on the compiled ops, whatever VAE_EXT_FORCE_FALLBACK says."""
    monkeypatch.setattr(_ops, "ops", _ops.compiled)


def test_compile_fullgraph_given_eps_matches_eager(kernels, compiled_api):
    values = inputs(prior="per_latent", device=kernels.device)
    leaves = [values[k].requires_grad_(True) for k in ("mu", "logvar", "eps", "prior_mu", "prior_logvar")]
    weight = grad_like(values["mu"])
    eager = loss_and_grads(vae_loss, leaves, weight)
    compiled = loss_and_grads(torch.compile(vae_loss, fullgraph=True), leaves, weight)
    assert_same_results(compiled, eager, torch.float32)


def test_compile_fullgraph_sampled_matches_eager(kernels):
    values = inputs(prior="per_latent", device=kernels.device)
    leaves = [values[k].requires_grad_(True) for k in ("mu", "logvar", "prior_logvar")]
    weight = grad_like(values["mu"])
    compiled_fn = torch.compile(sampled_loss, fullgraph=True)
    eager = loss_and_grads(sampled_loss, leaves, values["seed"], weight)
    compiled = loss_and_grads(compiled_fn, leaves, values["seed"], weight)
    assert torch.equal(compiled[0], eager[0])  # same seed tensor -> same ε
    # The loss and the prior's gradient sum over the batch, in an order compile may change.
    assert_same_results(compiled, eager, torch.float32, terms=math.prod(SHAPE))
    other_seed = loss_and_grads(compiled_fn, leaves, seed_tensor(1, kernels.device), weight)
    assert not torch.equal(other_seed[0], eager[0])  # the seed is an input, not a baked constant


def test_compile_fullgraph_fallback_given_eps(monkeypatch):
    # Without the extension the functional API runs the fallback; with a given ε it is plain tensor code.
    monkeypatch.setattr(_ops, "ops", _ops.fallback)
    values = inputs(prior="per_latent")
    leaves = [values[k].requires_grad_(True) for k in ("mu", "logvar", "eps", "prior_mu", "prior_logvar")]
    weight = grad_like(values["mu"])
    eager = loss_and_grads(vae_loss, leaves, weight)
    compiled = loss_and_grads(torch.compile(vae_loss, fullgraph=True), leaves, weight)
    assert_same_results(compiled, eager, torch.float32)
