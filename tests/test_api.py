"""The functional API and the ops across shapes, layouts, backends, bad input and NaN, on every
device (the `backend` / `api_backend` fixtures, tests/conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    DTYPES,
    HALF_DTYPES,
    TOLERANCES,
    assert_close,
    assert_kl_close,
    compute_dtype,
    dtype_id,
    f64,
    float64_grads,
    fused_oracle,
    grad_like,
    kl_formula,
    latent,
    make_prior,
    needs_compiled,
    randn,
    sampled_eps64,
    seed_tensor,
)
from torch.profiler import ProfilerActivity, profile

import vae_ext
from vae_ext import _ops

ON_EVERY_DEVICE = True
SEED = 0x5DEECE66D
ODD_SHAPES = ((1, 6), (6, 1), (1, 1), (3, 1023), (2, 3, 4, 5), (9,), (0, 5), (0, 2, 3), (0,))
COPY_EVENTS = {"aten::contiguous", "aten::clone", "aten::copy_", "aten::_to_copy"}


def run_fused(mu, logvar, prior_mu=None, prior_logvar=None, seed=5):
    """Functional reparameterize_kl with a known seed; returns (z, kl, seed)."""
    generator = torch.Generator(mu.device).manual_seed(seed)
    drawn = vae_ext.draw_seed(mu.device, torch.Generator(mu.device).manual_seed(seed))
    z, kl = vae_ext.reparameterize_kl(mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar, generator=generator)
    return z, kl, drawn


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
def test_odd_shapes_values_and_gradients(api_backend, dtype, shape):
    device = api_backend.device
    mu, logvar = latent(shape, dtype, device=device)
    leaves = [mu.requires_grad_(True), logvar.requires_grad_(True)]
    z, kl, seed = run_fused(*leaves)
    assert z.shape == shape and kl.shape == shape[:1]
    oracle = fused_oracle(sampled_eps64(seed, mu))
    expected_z, expected_kl = oracle(f64(mu), f64(logvar), None, None)
    assert_close(z, expected_z, dtype)
    assert_kl_close(kl, expected_kl, dtype, math.prod(shape[1:]))
    grad_z, grad_kl = grad_like(z, seed=2), grad_like(kl, seed=3)
    grads = torch.autograd.grad((z * grad_z).sum() + (kl * grad_kl).sum(), leaves)
    expected = float64_grads(oracle, (mu, logvar, None, None), (grad_z, grad_kl))
    for grad, exp in zip(grads, expected):
        assert grad.shape == shape
        assert_close(grad, exp, dtype)


def shaped_prior(kind, shape, dtype):
    """Priors of one kind; "expanded" is a full prior that is a stride-0 view of a per-latent one."""
    if kind == "expanded":
        prior_mu, prior_logvar = make_prior("per_latent", shape, dtype)
        return prior_mu.expand(shape), prior_logvar.expand(shape)
    return make_prior(kind, shape, dtype)


@pytest.mark.parametrize("kind", ("scalar_tensor", "per_latent", "per_latent_keepdim", "full", "expanded"))
@pytest.mark.parametrize("shape", ((1, 6), (6, 1), (1, 1), (2, 300), (2, 3, 4, 5), (9,), (0, 5)), ids=str)
def test_odd_shapes_with_priors(api_backend, kind, shape):
    device = api_backend.device
    dtype = torch.float32
    mu, logvar = latent(shape, dtype, device=device)
    prior_mu, prior_logvar = shaped_prior(kind, shape, dtype)
    leaves = [t.requires_grad_(True) for t in (mu, logvar, prior_mu, prior_logvar)]
    z, kl, seed = run_fused(*leaves)
    oracle = fused_oracle(sampled_eps64(seed, mu))
    expected_z, expected_kl = oracle(*(f64(t) for t in leaves))
    assert_close(z, expected_z, dtype)
    assert_kl_close(kl, expected_kl, dtype, math.prod(shape[1:]))
    grad_z, grad_kl = grad_like(z, seed=2), grad_like(kl, seed=3)
    grads = torch.autograd.grad((z * grad_z).sum() + (kl * grad_kl).sum(), leaves)
    expected = float64_grads(oracle, leaves, (grad_z, grad_kl))
    for leaf, grad, exp in zip(leaves, grads, expected):
        assert grad.shape == leaf.shape
        assert_close(grad, exp, dtype, terms=max(math.prod(shape), 1) // max(leaf.numel(), 1))


@pytest.mark.parametrize("shape", ((0, 5), (3, 0), (0,)), ids=str)
def test_empty_inputs(api_backend, shape):
    device = api_backend.device
    mu = torch.zeros(shape, requires_grad=True, device=device)
    logvar = torch.zeros(shape, requires_grad=True, device=device)
    z, kl = vae_ext.reparameterize_kl(mu, logvar, prior_mu=0.5)
    assert z.shape == shape and torch.equal(kl, torch.zeros(shape[0], device=device))
    assert vae_ext.gaussian_kl(mu, logvar, reduction="sum").item() == 0.0
    (z.sum() + kl.sum()).backward()
    assert mu.grad.shape == shape and logvar.grad.shape == shape


def test_one_dimensional_mu_is_a_batch_of_scalars(api_backend, dtype):
    device = api_backend.device
    mu, logvar = latent((7,), dtype, device=device)
    kl = vae_ext.gaussian_kl(mu, logvar, reduction="none")
    element = kl_formula(f64(mu)[:, None], f64(logvar)[:, None])
    assert_kl_close(kl, element, dtype, 1)


# --------------------------------------------------------------------------- strided rows


def chunked_latent(rows, cols, dtype, seed=0, device="cpu"):
    """(h, mu, logvar) with mu, logvar = h.chunk(2, dim=1): strided rows, contiguous inside."""
    h = randn((rows, 2 * cols), dtype, torch.Generator().manual_seed(seed), device=device)
    mu, logvar = h.chunk(2, dim=1)
    assert not mu.is_contiguous() and mu.stride() == (2 * cols, 1)
    return h, mu, logvar


@pytest.mark.parametrize("kind", ("standard", "per_latent", "full"))
def test_strided_rows_match_contiguous(api_backend, dtype, kind):
    device = api_backend.device
    h, mu, logvar = chunked_latent(6, 10, dtype, device=device)
    prior_mu, prior_logvar = make_prior(kind, (6, 10), dtype, device=device)
    if kind == "full":  # strided full priors too
        prior_mu, prior_logvar = torch.cat((prior_mu, prior_logvar), dim=1).chunk(2, dim=1)
    h.requires_grad_(True)
    mu, logvar = h.chunk(2, dim=1)
    z, kl, _ = run_fused(mu, logvar, prior_mu, prior_logvar)
    assert z.is_contiguous()
    grad_z, grad_kl = grad_like(z, seed=4), grad_like(kl, seed=5)
    (grad_h,) = torch.autograd.grad((z * grad_z).sum() + (kl * grad_kl).sum(), h)

    flat = h.detach().clone().requires_grad_(True)
    mu_c, logvar_c = (t.contiguous() for t in flat.chunk(2, dim=1))
    priors_c = tuple(p.contiguous() if isinstance(p, torch.Tensor) else p for p in (prior_mu, prior_logvar))
    z_c, kl_c, _ = run_fused(mu_c, logvar_c, *priors_c)
    (grad_flat,) = torch.autograd.grad((z_c * grad_z).sum() + (kl_c * grad_kl).sum(), flat)
    assert torch.equal(z, z_c)
    torch.testing.assert_close(kl, kl_c, rtol=2 * torch.finfo(kl.dtype).eps, atol=0.0)
    assert torch.equal(grad_h, grad_flat)


def test_strided_eps_and_grad_z(backend, dtype):
    device = backend.device
    _, mu, logvar = chunked_latent(5, 8, dtype, seed=1, device=device)
    _, eps, grad_z = chunked_latent(5, 8, dtype, seed=2, device=device)
    z = backend.reparameterize(mu, logvar, eps)
    assert torch.equal(z, backend.reparameterize(mu.contiguous(), logvar.contiguous(), eps.contiguous()))
    grad_logvar = backend.reparameterize_backward(grad_z, logvar, eps, None)
    expected = backend.reparameterize_backward(grad_z.contiguous(), logvar.contiguous(), eps.contiguous(), None)
    assert torch.equal(grad_logvar, expected)


@pytest.mark.parametrize("latent_dim", [1, 12, 1023, 4096])
def test_strided_rows_match_contiguous_in_the_ops(backend, dtype, latent_dim):
    _, mu, logvar = chunked_latent(48, latent_dim, dtype, seed=3, device=backend.device)
    seed = seed_tensor(SEED, backend.device)
    z, kl = backend.reparameterize_kl(mu, logvar, None, seed, None, None)
    z_ref, kl_ref = backend.reparameterize_kl(mu.contiguous(), logvar.contiguous(), None, seed, None, None)
    assert torch.equal(z, z_ref)
    assert torch.equal(kl, kl_ref)
    grads = backend.reparameterize_kl_backward(z, kl, mu, logvar, None, seed, None, None, False)
    grads_ref = backend.reparameterize_kl_backward(
        z, kl, mu.contiguous(), logvar.contiguous(), None, seed, None, None, False
    )
    for g, r in zip(grads[:2], grads_ref[:2]):
        assert torch.equal(g, r)


def copy_events(fn):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return COPY_EVENTS & {event.name for event in prof.events()}


def strided_op_calls(mu, logvar, eps, grad_z, grad_kl, seed, prior):
    ops = _ops.compiled
    return {
        "reparameterize": lambda: ops.reparameterize(mu, logvar, eps),
        "reparameterize_sampled": lambda: ops.reparameterize_sampled(mu, logvar, seed),
        "reparameterize_backward": lambda: ops.reparameterize_backward(grad_z, logvar, None, seed),
        "gaussian_kl": lambda: ops.gaussian_kl(mu, logvar, prior, prior),
        "reparameterize_kl": lambda: ops.reparameterize_kl(mu, logvar, None, seed, prior, prior),
        "reparameterize_kl_eps": lambda: ops.reparameterize_kl(mu, logvar, eps, None, None, None),
        "reparameterize_kl_backward": lambda: ops.reparameterize_kl_backward(
            grad_z, grad_kl, mu, logvar, None, seed, prior, prior, True
        ),
    }


@needs_compiled
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
def test_compiled_ops_do_not_copy_strided_rows(dtype):
    _, mu, logvar = chunked_latent(16, 32, dtype)
    _, eps, grad_z = chunked_latent(16, 32, dtype, seed=1)
    _, prior, _ = chunked_latent(16, 32, dtype, seed=2)
    grad_kl = torch.randn(16, dtype=compute_dtype(dtype))
    for name, call in strided_op_calls(mu, logvar, eps, grad_z, grad_kl, seed_tensor(1), prior).items():
        assert not copy_events(call), name


@needs_compiled
def test_compiled_ops_do_not_copy_strided_4d_rows():
    h = torch.randn(3, 8, 5, 4)
    mu, logvar = h.chunk(2, dim=1)
    assert not mu.is_contiguous()
    grad_kl = torch.randn(3)
    assert not copy_events(lambda: _ops.compiled.reparameterize_kl(mu, logvar, None, seed_tensor(2), None, None))
    backward = _ops.compiled.reparameterize_kl_backward
    assert not copy_events(lambda: backward(logvar, grad_kl, mu, logvar, None, seed_tensor(2), None, None, False))


@needs_compiled
def test_copy_detector_sees_a_copy():
    # Inner dims not contiguous: the op must copy, and the profiler must say so.
    mu = torch.randn(32, 16).t()
    assert copy_events(lambda: _ops.compiled.gaussian_kl(mu, mu, None, None))


@pytest.mark.parametrize("shape", ((1,), (1, 1)), ids=str)
def test_seed_of_any_single_element_shape(backend, shape):
    device = backend.device
    mu, logvar = latent((3, 4), torch.float32, device=device)
    seed = torch.full(shape, 123456789, dtype=torch.int64, device=device)
    assert torch.equal(
        backend.reparameterize_sampled(mu, logvar, seed),
        backend.reparameterize_sampled(mu, logvar, seed_tensor(123456789, device)),
    )


def test_integer_prior_is_a_float_prior(api_backend):
    device = api_backend.device
    mu, logvar = latent((3, 4), torch.float64, device=device)
    assert torch.equal(
        vae_ext.gaussian_kl(mu, logvar, prior_mu=1, prior_logvar=-2, reduction="none"),
        vae_ext.gaussian_kl(mu, logvar, prior_mu=1.0, prior_logvar=-2.0, reduction="none"),
    )


# --------------------------------------------------------------------------- compiled == fallback


def both_backends(fn):
    return fn(_ops.compiled), fn(_ops.fallback)


def assert_backends_agree(fn):
    """Both backends' outputs agree: each is within the oracle tolerance, so within twice it."""
    compiled, fallback = both_backends(fn)
    compiled = compiled if isinstance(compiled, tuple) else (compiled,)
    fallback = fallback if isinstance(fallback, tuple) else (fallback,)
    assert len(compiled) == len(fallback)
    for c, f in zip(compiled, fallback):
        assert c.shape == f.shape and c.dtype == f.dtype
        rtol, atol = TOLERANCES[c.dtype]
        torch.testing.assert_close(c, f, rtol=2 * rtol, atol=2 * atol)


def op_inputs(dtype, shape=(6, 9)):
    mu, logvar = latent(shape, dtype)
    gen = torch.Generator().manual_seed(3)
    return {
        "mu": mu,
        "logvar": logvar,
        "eps": randn(shape, dtype, gen),
        "grad_z": randn(shape, dtype, gen),
        "grad_kl": randn(shape[:1], compute_dtype(dtype), gen),
        "prior_mu": randn(shape[1:], dtype, gen, 0.5),
        "prior_logvar": randn(shape[1:], dtype, gen, 0.5),
        "seed": seed_tensor(-314),
    }


AGREEMENT_CALLS = {
    "reparameterize": lambda o, a: o.reparameterize(a["mu"], a["logvar"], a["eps"]),
    "reparameterize_sampled": lambda o, a: o.reparameterize_sampled(a["mu"], a["logvar"], a["seed"]),
    "reparameterize_backward_eps": lambda o, a: o.reparameterize_backward(a["grad_z"], a["logvar"], a["eps"], None),
    "reparameterize_backward_seed": lambda o, a: o.reparameterize_backward(a["grad_z"], a["logvar"], None, a["seed"]),
    "gaussian_kl": lambda o, a: o.gaussian_kl(a["mu"], a["logvar"], None, None),
    "gaussian_kl_prior": lambda o, a: o.gaussian_kl(a["mu"], a["logvar"], a["prior_mu"], a["prior_logvar"]),
    "reparameterize_kl_eps": lambda o, a: o.reparameterize_kl(a["mu"], a["logvar"], a["eps"], None, None, None),
    "reparameterize_kl_seed": lambda o, a: o.reparameterize_kl(
        a["mu"], a["logvar"], None, a["seed"], a["prior_mu"], a["prior_logvar"]
    ),
    "reparameterize_kl_backward": lambda o, a: o.reparameterize_kl_backward(
        a["grad_z"], a["grad_kl"], a["mu"], a["logvar"], None, a["seed"], a["prior_mu"], a["prior_logvar"], True
    ),
    "reparameterize_kl_backward_kl_only": lambda o, a: o.reparameterize_kl_backward(
        None, a["grad_kl"], a["mu"], a["logvar"], None, None, None, None, False
    ),
}


@needs_compiled
@pytest.mark.parametrize("call", AGREEMENT_CALLS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_backends_agree_on_every_op(call, dtype):
    inputs = op_inputs(dtype)
    assert_backends_agree(lambda ops: AGREEMENT_CALLS[call](ops, inputs))


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("source", ("eps", "seed"))
def test_backends_agree_on_gradients(dtype, source):
    def grads(ops):
        a = op_inputs(dtype)
        leaves = [a[k].requires_grad_(True) for k in ("mu", "logvar", "prior_mu", "prior_logvar")]
        eps = a["eps"].requires_grad_(True) if source == "eps" else None
        seed = a["seed"] if source == "seed" else None
        z, kl = ops.reparameterize_kl(leaves[0], leaves[1], eps, seed, leaves[2], leaves[3])
        loss = (z * a["grad_z"]).sum() + (kl * a["grad_kl"]).sum()
        return torch.autograd.grad(loss, leaves + ([eps] if eps is not None else []))

    assert_backends_agree(grads)


@needs_compiled
@pytest.mark.parametrize(
    "dtype",
    [torch.float64, torch.float32, *HALF_DTYPES],
    ids=dtype_id,
)
def test_backends_sample_bit_identical_z(dtype):
    # logvar = 0: z = mu + ε with one rounding, so equal ε give equal z in every dtype.
    mu, _ = latent((32, 64), dtype)
    logvar = torch.zeros_like(mu)
    compiled, fallback = both_backends(lambda ops: ops.reparameterize_sampled(mu, logvar, seed_tensor(12)))
    assert torch.equal(compiled, fallback)


# --------------------------------------------------------------------------- errors


def bad_calls(ops, device="cpu"):
    """(description, call, exception type, argument named in the message)."""
    mu, logvar = latent((4, 5), torch.float32, device=device)
    seed = seed_tensor(1, device)
    per_latent = torch.zeros(5, device=device)
    return [
        ("logvar shape", lambda: ops.reparameterize(mu, logvar[:, :4], mu), ValueError, "logvar"),
        ("eps shape", lambda: ops.reparameterize(mu, logvar, mu[:3]), ValueError, "eps"),
        ("eps dtype", lambda: ops.reparameterize(mu, logvar, mu.double()), TypeError, "eps"),
        ("logvar dtype", lambda: ops.gaussian_kl(mu, logvar.half(), None, None), TypeError, "logvar"),
        ("integer mu", lambda: ops.gaussian_kl(mu.long(), logvar.long(), None, None), TypeError, "mu"),
        ("0-d mu", lambda: ops.gaussian_kl(mu[0, 0], logvar[0, 0], None, None), ValueError, "mu"),
        ("logvar device", lambda: ops.gaussian_kl(mu, logvar.to("meta"), None, None), ValueError, "logvar"),
        ("mu device", lambda: ops.reparameterize(mu.to("meta"), logvar, mu), ValueError, "logvar"),
        ("seed device", lambda: ops.reparameterize_sampled(mu, logvar, seed.to("meta")), ValueError, "seed"),
        ("prior device", lambda: ops.gaussian_kl(mu, logvar, per_latent.to("meta"), None), ValueError, "prior_mu"),
        (
            "prior_mu shape",
            lambda: ops.gaussian_kl(mu, logvar, torch.zeros(4, device=device), None),
            ValueError,
            "prior_mu",
        ),
        (
            "prior_logvar shape",
            lambda: ops.gaussian_kl(mu, logvar, None, torch.zeros(4, 1, device=device)),
            ValueError,
            "prior_logvar",
        ),
        (
            "prior_logvar 3-d",
            lambda: ops.gaussian_kl(mu, logvar, None, torch.zeros(1, 4, 5, device=device)),
            ValueError,
            "prior_logvar",
        ),
        ("prior dtype", lambda: ops.gaussian_kl(mu, logvar, per_latent.double(), None), TypeError, "prior_mu"),
        (
            "seed dtype",
            lambda: ops.reparameterize_sampled(mu, logvar, torch.tensor(1.0, device=device)),
            TypeError,
            "seed",
        ),
        ("seed int32", lambda: ops.reparameterize_kl(mu, logvar, None, seed.int(), None, None), TypeError, "seed"),
        (
            "seed size",
            lambda: ops.reparameterize_sampled(mu, logvar, torch.tensor([1, 2], device=device)),
            ValueError,
            "seed",
        ),
        ("grad_z shape", lambda: ops.reparameterize_backward(mu[:2], logvar, mu, None), ValueError, "grad_z"),
        (
            "grad_kl shape",
            lambda: ops.reparameterize_kl_backward(
                None, torch.ones(3, device=device), mu, logvar, None, None, None, None, False
            ),
            ValueError,
            "grad_kl",
        ),
    ]


BAD_CALL_NAMES = [case[0] for case in bad_calls(_ops.fallback)]


@pytest.mark.parametrize("case", BAD_CALL_NAMES)
def test_bad_input_raises_naming_the_argument(backend, case):
    _, call, error, argument = next(c for c in bad_calls(backend, backend.device) if c[0] == case)
    with pytest.raises(error, match=rf"\b{argument}\b must"):
        call()


def functional_bad_calls(device="cpu"):
    mu, logvar = latent((4, 5), torch.float32, device=device)
    return [
        ("kl reduction", lambda: vae_ext.gaussian_kl(mu, logvar, reduction="avg"), ValueError, "reduction"),
        (
            "fused reduction",
            lambda: vae_ext.reparameterize_kl(mu, logvar, reduction="batchmean"),
            ValueError,
            "reduction",
        ),
        ("prior type", lambda: vae_ext.gaussian_kl(mu, logvar, prior_mu="zero"), TypeError, "prior_mu"),
        ("prior bool", lambda: vae_ext.reparameterize_kl(mu, logvar, prior_logvar=True), TypeError, "prior_logvar"),
        (
            "prior shape",
            lambda: vae_ext.gaussian_kl(mu, logvar, prior_mu=torch.zeros(3, 5, device=device)),
            ValueError,
            "prior_mu",
        ),
        ("eps shape", lambda: vae_ext.reparameterize(mu, logvar, eps=mu.new_zeros(4, 6)), ValueError, "eps"),
        ("integer mu", lambda: vae_ext.reparameterize(mu.int(), logvar.int()), TypeError, "mu"),
        ("logvar device", lambda: vae_ext.reparameterize_kl(mu, logvar.to("meta")), ValueError, "logvar"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in functional_bad_calls()])
def test_functional_bad_input_raises_naming_the_argument(api_backend, case):
    _, call, error, argument = next(c for c in functional_bad_calls(api_backend.device) if c[0] == case)
    with pytest.raises(error, match=rf"\b{argument}\b"):
        call()


# --------------------------------------------------------------------------- NaN


NAN_TARGETS = ("mu", "logvar", "prior_mu", "prior_logvar")


@pytest.mark.parametrize("target", NAN_TARGETS)
def test_nan_in_nan_out(api_backend, dtype, target):
    device = api_backend.device
    shape = (4, 6)
    mu, logvar = latent(shape, dtype, device=device)
    prior_mu, prior_logvar = make_prior("per_latent", shape, dtype, device=device)
    tensors = {"mu": mu, "logvar": logvar, "prior_mu": prior_mu, "prior_logvar": prior_logvar}
    poisoned = tensors[target]
    poisoned.view(-1)[poisoned.numel() // 2 + 1] = math.nan
    leaves = [tensors[name].requires_grad_(True) for name in NAN_TARGETS]
    z, kl, seed = run_fused(*leaves)
    grad_z, grad_kl = grad_like(z, seed=6), grad_like(kl, seed=7)
    grads = torch.autograd.grad((z * grad_z).sum() + (kl * grad_kl).sum(), leaves)

    oracle = fused_oracle(sampled_eps64(seed, mu))
    expected_z, expected_kl = oracle(*(f64(t) for t in leaves))
    assert torch.isnan(z).any() == (target in ("mu", "logvar"))
    assert torch.isnan(kl).any()
    torch.testing.assert_close(torch.isnan(z).cpu(), torch.isnan(expected_z))
    torch.testing.assert_close(torch.isnan(kl).cpu(), torch.isnan(expected_kl))
    expected_grads = float64_grads(oracle, leaves, (grad_z, grad_kl))
    for name, grad, exp in zip(NAN_TARGETS, grads, expected_grads):
        assert torch.isnan(exp).any() or name != target
        torch.testing.assert_close(torch.isnan(grad).cpu(), torch.isnan(exp), msg=f"NaN pattern of d/d{name}")


# --------------------------------------------------------------------------- build info


def test_build_info():
    info = vae_ext.build_info()
    for key in ("version", "torch", "cpu_kernels", "cuda_kernels", "cuda_arch_list", "backend"):
        assert key in info
    assert info["version"] == vae_ext.__version__
    assert info["torch"] == torch.__version__
    assert info["cpu_kernels"] == (_ops.compiled is not None)
    assert info["backend"] == ("fallback" if _ops.ops is _ops.fallback else "compiled")
    assert isinstance(info["cuda_arch_list"], list)


def test_public_names():
    for name in ("reparameterize", "gaussian_kl", "reparameterize_kl", "build_info", "draw_seed"):
        assert callable(getattr(vae_ext, name))
    assert all(hasattr(vae_ext, name) for name in vae_ext.__all__)
    assert "reference" not in vae_ext.__all__  # internal (the fallback and the tests' oracle), still importable
    for name in _ops.OP_NAMES:  # the one op list (vae_ext/_ops.py): each op set has each op
        assert callable(getattr(_ops.fallback, name))


@needs_compiled
def test_op_list_is_the_registered_ops():
    registered = {
        n.removeprefix("vae_ext::") for n in torch._C._dispatch_get_all_op_names() if n.startswith("vae_ext::")
    }
    assert registered == set(_ops.OP_NAMES)
