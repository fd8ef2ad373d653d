"""Latents on another device than the CPU with what torch and diffusers users pass from the CPU:
a CPU generator, CPU 0-d priors (what Normal(0.0, 1.0) holds) and learnable CPU 0-d priors,
whose gradient comes back on the CPU. On the meta device here, on CUDA where there is one."""

from __future__ import annotations

import pytest
import torch
from helpers import needs_compiled
from torch.distributions import Distribution, Independent, Normal, kl_divergence

import vae_ext
from vae_ext.distributions import DiagonalGaussian, DiagonalGaussianDistribution

DEVICES = (
    pytest.param("meta", id="meta"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=(needs_compiled, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
    ),
)


def moments(device):
    h = torch.randn(3, 8, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return h, h.to(device)


def on_cpu_too(device, ours, cpu):
    """The device's result: on the meta device its shape, dtype and device; on CUDA the CPU's bits."""
    assert ours.shape == cpu.shape and ours.dtype == cpu.dtype and ours.device.type == device
    if device != "meta":
        assert torch.equal(ours.cpu(), cpu)


@pytest.mark.parametrize("device", DEVICES)
def test_a_cpu_generator_samples_latents_on_the_device(device):
    h, hd = moments(device)

    def draws(h):
        gen = torch.Generator().manual_seed(4)
        q = DiagonalGaussian(*h.chunk(2, dim=1), validate_args=False)
        posterior = DiagonalGaussianDistribution(h)
        gens = [torch.Generator().manual_seed(s) for s in range(3)]
        return q.rsample(generator=gen), q.rsample((2,), generator=gen), posterior.sample(gens)

    for ours, cpu in zip(draws(hd), draws(h)):
        on_cpu_too(device, ours, cpu)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "prior",
    ("standard_floats", "cpu_0d", "cpu_expanded"),
)
def test_cpu_0d_priors_beside_latents_on_the_device(device, prior, monkeypatch):
    h, hd = moments(device)
    make_prior = {
        "standard_floats": lambda: Normal(0.0, 1.0),
        "cpu_0d": lambda: Normal(torch.tensor(0.5, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)),
        "cpu_expanded": lambda: Independent(Normal(torch.zeros(()).expand(4, 2, 3), torch.ones(()).expand(4, 2, 3)), 3),
    }[prior]
    ours = kl_divergence(DiagonalGaussian(*hd.chunk(2, dim=1), validate_args=False), make_prior())
    cpu = kl_divergence(DiagonalGaussian(*h.chunk(2, dim=1), validate_args=False), make_prior())
    on_cpu_too(device, ours, cpu)
    latent = vae_ext.GaussianLatent((4, 2, 3)).double()  # its prior() holds expanded CPU 0-d tensors
    if device == "meta":  # validation reads values, which meta tensors do not have (as torch's own)
        monkeypatch.setattr(Distribution, "_validate_args", False)
    kl = kl_divergence(latent.posterior(hd), latent.prior())
    on_cpu_too(device, kl, kl_divergence(latent.posterior(h), latent.prior()))


@pytest.mark.parametrize("device", DEVICES)
def test_a_learnable_cpu_0d_prior_gets_its_gradient_on_the_cpu(device):
    h, hd = moments(device)
    loc = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(-0.2, dtype=torch.float64, requires_grad=True)
    leaf = hd.clone().requires_grad_(True)
    kl = kl_divergence(DiagonalGaussian(*leaf.chunk(2, dim=1), validate_args=False), Normal(loc, log_scale.exp()))
    assert kl.device.type == device
    if device == "meta":  # no data to bring back to the CPU: the gradient of the latents only
        assert torch.autograd.grad(kl.sum(), leaf)[0].device.type == "meta"
        return
    grads = torch.autograd.grad(kl.sum(), (leaf, loc, log_scale))
    cpu_leaf = h.clone().requires_grad_(True)
    cpu_kl = kl_divergence(DiagonalGaussian(*cpu_leaf.chunk(2, dim=1)), Normal(loc, log_scale.exp()))
    expected = torch.autograd.grad(cpu_kl.sum(), (cpu_leaf, loc, log_scale))
    assert grads[1].device.type == grads[2].device.type == "cpu"
    for grad, exp in zip(grads, expected):
        torch.testing.assert_close(grad.cpu(), exp, rtol=1e-12, atol=1e-12)
