"""No lazy attribute of DiagonalGaussianDistribution outlives the grad mode it was made in: every
read after reads under no_grad / inference_mode has the values and gradients of a fresh posterior."""

from __future__ import annotations

import pytest
import torch
from helpers import randn

from vae_ext import reference
from vae_ext.distributions import DiagonalGaussianDistribution

diffusers_vae = pytest.importorskip("diffusers.models.autoencoders.vae", reason="diffusers is a test dependency")
DiffusersPosterior = diffusers_vae.DiagonalGaussianDistribution

SHAPE = (2, 3, 4, 5)
SEED = 11
MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def make_params(layout=torch.contiguous_format):
    gen = torch.Generator().manual_seed(0)
    b, c, h, w = SHAPE
    t = torch.randn(b, 2 * c, h, w, generator=gen, dtype=torch.float64)
    t[:, c:] = 0.8 * t[:, c:] - 0.3
    t[0, c, 0, 0] = -31.0  # one logvar past the clamp: its gradient is 0 in both classes
    return t.contiguous(memory_format=layout).requires_grad_(True)


X = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def eps():
    """The ε sample(generator=Generator().manual_seed(SEED)) draws, in the logical order."""
    from vae_ext import draw_seed

    seed = int(draw_seed("cpu", torch.Generator().manual_seed(SEED)))
    return reference.normals(seed, X.numel()).double().reshape(SHAPE)


READS = {
    "logvar": lambda p: p.logvar,
    "std": lambda p: p.std,
    "var": lambda p: p.var,
    "sample": lambda p: p.sample(generator=torch.Generator().manual_seed(SEED)),
    "kl": lambda p: p.kl(),
    "kl_other": lambda p: p.kl(DiagonalGaussianDistribution(p.parameters.detach().flip(0))),
    "nll": lambda p: p.nll(X),
    "mode": lambda p: p.mode(),
}
# diffusers' formulas on its own class, fed with our ε for the sample.
DIFFUSERS = {
    **{name: READS[name] for name in ("logvar", "std", "var", "kl", "nll", "mode")},
    "sample": lambda p: p.mean + p.std * eps(),
    "kl_other": lambda p: p.kl(DiffusersPosterior(p.parameters.detach().flip(0))),
}


@pytest.mark.parametrize("layout", (torch.contiguous_format, torch.channels_last), ids=("contiguous", "channels_last"))
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("target", sorted(READS))
def test_reads_under_no_grad_leave_later_values_and_gradients_exact(target, mode, layout):
    params = make_params(layout)
    posterior = DiagonalGaussianDistribution(params)
    with MODES[mode]():
        for read in READS.values():  # every attribute and method, the target included
            read(posterior)
    out = READS[target](posterior)
    fresh = READS[target](DiagonalGaussianDistribution(params))
    assert out.requires_grad and torch.equal(out, fresh)
    grad_out = randn(out.shape, out.dtype, torch.Generator().manual_seed(2), shift=0.5)
    (grad,) = torch.autograd.grad(out, params, grad_out)
    (fresh_grad,) = torch.autograd.grad(fresh, params, grad_out)
    assert torch.equal(grad, fresh_grad)
    assert grad[:, SHAPE[1] :].any() or target == "mode"  # the logvar half gets its gradient
    theirs = DIFFUSERS[target](DiffusersPosterior(params))
    torch.testing.assert_close(out, theirs, rtol=1e-12, atol=1e-12)
    (their_grad,) = torch.autograd.grad(theirs, params, grad_out)
    torch.testing.assert_close(grad, their_grad, rtol=1e-10, atol=1e-12)


def test_a_value_made_with_grad_is_reused_under_no_grad():
    posterior = DiagonalGaussianDistribution(make_params())
    std = posterior.std
    with torch.no_grad():
        assert posterior.std is std  # as diffusers' attribute: one tensor, carrying its graph


def test_a_value_made_under_no_grad_is_reused_under_no_grad_only():
    posterior = DiagonalGaussianDistribution(make_params())
    with torch.no_grad():
        std = posterior.std
        assert posterior.std is std and not std.requires_grad
    assert posterior.std is not std and posterior.std.requires_grad


@pytest.mark.parametrize("mode", sorted(MODES))
def test_assigned_attributes_are_kept_in_every_mode(mode):
    posterior = DiagonalGaussianDistribution(make_params())
    value = torch.full(SHAPE, 0.5, dtype=torch.float64)
    posterior.logvar = value
    with MODES[mode]():
        assert posterior.logvar is value
    assert posterior.logvar is value


@torch._inductor.config.patch(fallback_random=True)  # the compiled seed draw is eager's
def test_compile_fullgraph_encode_sample_kl_step_with_a_no_grad_read():
    torch.manual_seed(0)
    encoder = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 4, 4)

    def step(x):
        posterior = DiagonalGaussianDistribution(encoder(x))
        with torch.no_grad():
            preview = posterior.std.mean()  # logged before the loss
        z = posterior.sample()
        return (z * z).mean() + posterior.kl().mean(), preview

    torch._dynamo.reset()
    torch.manual_seed(1)
    loss, preview = torch.compile(step, fullgraph=True)(x)
    grads = torch.autograd.grad(loss, list(encoder.parameters()))
    torch.manual_seed(1)
    eager_loss, eager_preview = step(x)
    eager_grads = torch.autograd.grad(eager_loss, list(encoder.parameters()))
    torch.testing.assert_close(loss, eager_loss)
    torch.testing.assert_close(preview, eager_preview)
    for grad, expected in zip(grads, eager_grads):
        assert grad.any()
        torch.testing.assert_close(grad, expected)
