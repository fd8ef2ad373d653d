"""Ambiguous or missing noise arguments raise the same error, naming the op, on every path:
the compiled kernels on every device, the pure-PyTorch reference (the fallback), and the fake
kernels that torch.compile and FakeTensorMode run."""

from __future__ import annotations

import pytest
import torch
from helpers import needs_compiled
from torch._subclasses.fake_tensor import FakeTensorMode

from vae_ext import reference

ON_EVERY_DEVICE = True
BOTH = "eps and seed are both given"
NEITHER = "pass exactly one of eps and seed"


def _inputs(device="cpu"):
    gen = torch.Generator().manual_seed(0)
    mu, logvar, eps, grad_z = (torch.randn(3, 5, generator=gen).to(device) for _ in range(4))
    seed = torch.tensor([7], device=device)
    grad_kl = torch.ones(3, device=device)
    return {"mu": mu, "logvar": logvar, "eps": eps, "grad_z": grad_z, "grad_kl": grad_kl, "seed": seed}


# (op, message, call(ops, t)): every combination of eps and seed that an op must refuse.
CASES = (
    (
        "reparameterize_kl",
        BOTH,
        lambda o, t: o.reparameterize_kl(t["mu"], t["logvar"], t["eps"], t["seed"], None, None),
    ),
    ("reparameterize_kl", NEITHER, lambda o, t: o.reparameterize_kl(t["mu"], t["logvar"], None, None, None, None)),
    (
        "reparameterize_backward",
        BOTH,
        lambda o, t: o.reparameterize_backward(t["grad_z"], t["logvar"], t["eps"], t["seed"]),
    ),
    ("reparameterize_backward", NEITHER, lambda o, t: o.reparameterize_backward(t["grad_z"], t["logvar"], None, None)),
    (
        "reparameterize_kl_backward",
        BOTH,
        lambda o, t: o.reparameterize_kl_backward(
            t["grad_z"], t["grad_kl"], t["mu"], t["logvar"], t["eps"], t["seed"], None, None, False
        ),
    ),
    (
        # No grad_z, so neither would be used, but the call is still ambiguous.
        "reparameterize_kl_backward",
        BOTH,
        lambda o, t: o.reparameterize_kl_backward(
            None, t["grad_kl"], t["mu"], t["logvar"], t["eps"], t["seed"], None, None, True
        ),
    ),
    (
        "reparameterize_kl_backward",
        NEITHER,
        lambda o, t: o.reparameterize_kl_backward(
            t["grad_z"], t["grad_kl"], t["mu"], t["logvar"], None, None, None, None, False
        ),
    ),
)
CASE_IDS = [f"{op}-{'both' if msg == BOTH else 'neither'}-{i}" for i, (op, msg, _) in enumerate(CASES)]


def _expect(op, message):
    return pytest.raises(ValueError, match=rf"^{op}: {message}")


@pytest.mark.parametrize(("op", "message", "call"), CASES, ids=CASE_IDS)
def test_reference_rejects(op, message, call):
    with _expect(op, message):
        call(reference, _inputs())


@pytest.mark.parametrize(("op", "message", "call"), CASES, ids=CASE_IDS)
def test_op_set_rejects(backend, op, message, call):
    # The fallback's backward ops are the reference's; its forward ops wrap them in autograd.
    with _expect(op, message):
        call(backend.ops, _inputs(backend.device))


@needs_compiled
@pytest.mark.parametrize(("op", "message", "call"), CASES, ids=CASE_IDS)
def test_fake_kernel_rejects(op, message, call):
    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) for k, v in _inputs().items()}
        with _expect(op, message):
            call(torch.ops.vae_ext, fake)


@needs_compiled
def test_torch_compile_rejects_while_tracing():
    def both(mu, logvar, eps, seed):
        return torch.ops.vae_ext.reparameterize_kl(mu, logvar, eps, seed, None, None)

    t = _inputs()
    compiled = torch.compile(both, backend="eager", fullgraph=True)
    with pytest.raises(Exception, match=rf"reparameterize_kl: {BOTH}"):
        compiled(t["mu"], t["logvar"], t["eps"], t["seed"])


def test_one_of_eps_and_seed_still_works(backend):
    ops = backend.ops
    t = _inputs(backend.device)
    z_eps, _ = ops.reparameterize_kl(t["mu"], t["logvar"], t["eps"], None, None, None)
    z_seed, _ = ops.reparameterize_kl(t["mu"], t["logvar"], None, t["seed"], None, None)
    assert z_eps.shape == z_seed.shape == t["mu"].shape
    g_mu, g_lv, _, _ = ops.reparameterize_kl_backward(
        None, t["grad_kl"], t["mu"], t["logvar"], None, None, None, None, False
    )
    assert torch.isfinite(g_mu).all() and torch.isfinite(g_lv).all()
