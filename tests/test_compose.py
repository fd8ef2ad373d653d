"""The ops inside the PyTorch stack: higher-order gradients, torch.func, vmap, torch.compile.

Every test runs on each op set (compiled, fallback) and, where it says so, on CUDA too.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import needs_compiled, needs_cuda
from torch.autograd import gradcheck, gradgradcheck
from torch.func import grad, jacfwd, jacrev, vjp, vmap

import vae_ext
from vae_ext import _ops

DEVICES = ("cpu", pytest.param("cuda", marks=needs_cuda))
SHAPES = ((3, 5), (2, 3, 2))

# No compiled graph leaks from one test into the next (the fixture is in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_dynamo")
F64 = torch.float64


@pytest.fixture
def ops(api_backend):
    """An op set (compiled or fallback), also routed through the functional API; the tensors'
    device is each test's own `device` parameter, so both op sets also run on CUDA."""
    return api_backend.ops


def leaf(shape, device, seed, scale=1.0, shift=0.0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, dtype=F64, generator=gen) * scale + shift
    return t.to(device).requires_grad_(True)


PRIORS = ("standard", "float", "per_latent", "full", "learnable_per_latent", "learnable_scalar")


def prior_args(kind, shape, device):
    """(prior_mu, prior_logvar, learnable leaves) as the ops take them."""
    latent = shape[1:]
    if kind == "standard":
        return None, None, ()
    if kind == "float":
        return torch.tensor(0.25, dtype=F64, device=device), torch.tensor(-0.5, dtype=F64, device=device), ()
    if kind == "per_latent":
        return leaf(latent, device, 5, 0.5).detach(), leaf(latent, device, 6, 0.5).detach(), ()
    if kind == "full":
        return leaf(shape, device, 5, 0.5).detach(), leaf(shape, device, 6, 0.5).detach(), ()
    if kind == "learnable_per_latent":
        pm, plv = leaf(latent, device, 5, 0.5), leaf(latent, device, 6, 0.5)
        return pm, plv, (pm, plv)
    pm, plv = leaf((), device, 5, 0.5), leaf((), device, 6, 0.5)
    return pm, plv, (pm, plv)


SEED = torch.tensor(20261203)

# --------------------------------------------------------------------------- higher-order gradients


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("sample", ("kl_only", "eps_given", "eps_sampled"))
def test_gradgradcheck_every_argument_combination(ops, device, shape, prior, sample):
    mu, logvar = leaf(shape, device, 1), leaf(shape, device, 2, 0.7, -0.2)
    pm, plv, learnable = prior_args(prior, shape, device)
    seed = SEED.to(device)
    if sample == "kl_only":
        leaves = (mu, logvar, *learnable)

        def fn(m, lv, *p):
            return ops.gaussian_kl(m, lv, *(p or (pm, plv)))

    elif sample == "eps_given":
        eps = leaf(shape, device, 3)
        leaves = (mu, logvar, eps, *learnable)

        def fn(m, lv, e, *p):
            return ops.reparameterize_kl(m, lv, e, None, *(p or (pm, plv)))

    else:
        leaves = (mu, logvar, *learnable)

        def fn(m, lv, *p):
            return ops.reparameterize_kl(m, lv, None, seed, *(p or (pm, plv)))

    assert gradcheck(fn, leaves)
    assert gradgradcheck(fn, leaves)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", ("eps_given", "eps_sampled"))
def test_gradgradcheck_reparameterize(ops, device, sample):
    mu, logvar, eps = leaf((4, 3), device, 1), leaf((4, 3), device, 2), leaf((4, 3), device, 3)
    if sample == "eps_given":
        assert gradgradcheck(ops.reparameterize, (mu, logvar, eps))
    else:
        assert gradgradcheck(lambda m, lv: ops.reparameterize_sampled(m, lv, SEED.to(device)), (mu, logvar))


@pytest.mark.parametrize("device", DEVICES)
def test_backward_ops_are_differentiable(ops, device):
    """The backward ops themselves pass gradcheck and gradgradcheck (third order of the forward)."""
    mu, logvar, eps = leaf((3, 4), device, 1), leaf((3, 4), device, 2), leaf((3, 4), device, 3)
    grad_z, grad_kl = leaf((3, 4), device, 4, shift=0.3), leaf((3,), device, 5, shift=0.3)
    pm, plv = leaf((4,), device, 6, 0.5), leaf((4,), device, 7, 0.5)
    seed = SEED.to(device)

    def kl_backward(gz, gk, m, lv, a, b):
        return ops.reparameterize_kl_backward(gz, gk, m, lv, None, seed, a, b, True)

    def rep_backward(gz, lv, e):
        return ops.reparameterize_backward(gz, lv, e, None)

    for fn, args in ((kl_backward, (grad_z, grad_kl, mu, logvar, pm, plv)), (rep_backward, (grad_z, logvar, eps))):
        assert gradcheck(fn, args)
        assert gradgradcheck(fn, args)


def eager_kl(mu, logvar, pm, plv):
    """The textbook per-sample KL in plain tensor ops (the peer the penalty is checked against)."""
    elementwise = 0.5 * (plv - logvar + (torch.exp(logvar) + (mu - pm) ** 2) * torch.exp(-plv) - 1.0)
    return elementwise.expand(mu.shape).reshape(mu.shape[0], -1).sum(dim=1)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_penalty_matches_eager(ops, device):
    """grad of kl w.r.t. logvar with create_graph, then a penalty on it: every leaf's gradient."""

    def penalised(kl_fn, mu, logvar, pm, plv, weight):
        kl = kl_fn(mu, logvar, pm, plv)
        g_lv, g_mu = torch.autograd.grad((kl * weight).sum(), (logvar, mu), create_graph=True)
        loss = kl.sum() + (g_lv**2).sum() + 0.5 * (g_mu**2).sum()
        return torch.autograd.grad(loss, (mu, logvar, pm, plv))

    weight = leaf((5,), device, 9, shift=0.5).detach()
    leaves = [leaf((5, 6), device, 1), leaf((5, 6), device, 2), leaf((6,), device, 3, 0.5), leaf((6,), device, 4, 0.5)]
    got = penalised(ops.gaussian_kl, *leaves, weight)
    want = penalised(eager_kl, *leaves, weight)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_penalty_through_the_sample(ops, device):
    """A penalty on dz-gradients with a sampled ε: the eager formula with the same ε."""
    mu, logvar = leaf((4, 3), device, 1), leaf((4, 3), device, 2)
    seed = SEED.to(device)
    eps = ops.reparameterize_sampled(torch.zeros_like(mu), torch.zeros_like(logvar), seed).detach()

    def penalised(z_fn):
        z = z_fn(mu, logvar)
        (g_lv,) = torch.autograd.grad((z**3).sum(), logvar, create_graph=True)
        return torch.autograd.grad((g_lv**2).sum(), (mu, logvar))

    got = penalised(lambda m, lv: ops.reparameterize_sampled(m, lv, seed))
    want = penalised(lambda m, lv: m + eps * torch.exp(0.5 * lv))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@needs_compiled
def test_backward_op_without_grad_runs_the_fused_kernel():
    """No create_graph: the first-order gradient is the fused kernel's, bit for bit."""
    mu, logvar = leaf((4, 8), "cpu", 1).float(), leaf((4, 8), "cpu", 2).float()
    mu.retain_grad(), logvar.retain_grad()
    z, kl = _ops.compiled.reparameterize_kl(mu, logvar, None, SEED, None, None)
    gz, gk = torch.ones_like(z) * 0.5, torch.full_like(kl, 0.25)
    g_mu, g_lv = torch.autograd.grad((z, kl), (mu, logvar), (gz, gk))
    want = _ops.compiled.reparameterize_kl_backward(gz, gk, mu.detach(), logvar.detach(), None, SEED, None, None, False)
    assert torch.equal(g_mu, want[0]) and torch.equal(g_lv, want[1])


# --------------------------------------------------------------------------- torch.func


def kl_sum(mu, logvar):
    return vae_ext.gaussian_kl(mu, logvar, prior_mu=0.5, prior_logvar=-0.25, reduction="sum")


def autograd_grads(fn, *args):
    leaves = [a.detach().clone().requires_grad_(True) for a in args]
    return torch.autograd.grad(fn(*leaves), leaves)


@pytest.mark.parametrize("device", DEVICES)
def test_func_grad_and_vjp(ops, device):
    mu, logvar = leaf((3, 4), device, 1).detach(), leaf((3, 4), device, 2).detach()
    got = grad(kl_sum, argnums=(0, 1))(mu, logvar)
    want = autograd_grads(kl_sum, mu, logvar)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    eps = leaf((3, 4), device, 3).detach()
    out, pullback = vjp(lambda m, lv: vae_ext.reparameterize_kl(m, lv, eps=eps), mu, logvar)
    cot = (torch.full_like(out[0], 0.3), torch.linspace(-1, 1, 3, dtype=F64, device=device))
    got = pullback(cot)
    m, lv = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
    z, kl = vae_ext.reparameterize_kl(m, lv, eps=eps)
    want = torch.autograd.grad((z, kl), (m, lv), cot)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("output", ("z", "kl"))
def test_func_jacrev_equals_jacfwd_and_autograd(ops, device, output):
    mu, logvar = leaf((3, 4), device, 1).detach(), leaf((3, 4), device, 2).detach()
    pm = leaf((4,), device, 3, 0.5).detach()
    index = 0 if output == "z" else 1

    def fixed(m, lv, p):  # ε from a fixed seed: the same function on every call
        return _ops.active().reparameterize_kl(m, lv, None, SEED.to(device), p, None)[index]

    rev = jacrev(fixed, argnums=(0, 1, 2))(mu, logvar, pm)
    fwd = jacfwd(fixed, argnums=(0, 1, 2))(mu, logvar, pm)
    m, lv, p = (t.clone().requires_grad_(True) for t in (mu, logvar, pm))
    out = _ops.active().reparameterize_kl(m, lv, None, SEED.to(device), p, None)[index]
    for r, f, wrt in zip(rev, fwd, (m, lv, p)):
        torch.testing.assert_close(r, f)
        rows = [torch.autograd.grad(o, wrt, retain_graph=True)[0] for o in out.reshape(-1)]
        torch.testing.assert_close(r.reshape(len(rows), -1), torch.stack(rows).reshape(len(rows), -1))


@pytest.mark.parametrize("device", DEVICES)
def test_func_hessian(ops, device):
    mu, logvar = leaf((2, 3), device, 1).detach(), leaf((2, 3), device, 2).detach()
    h = torch.func.hessian(lambda lv: kl_sum(mu, lv))(logvar)
    # d2/dlv2 of 1/2 expm1(lv - plv) is diagonal: 1/2 e^(lv - plv)
    want = torch.diag_embed(0.5 * torch.exp(logvar + 0.25).reshape(-1)).reshape(2, 3, 2, 3)
    torch.testing.assert_close(h, want)


@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_gradients(ops, device):
    """vmap(grad(f)) equals a loop of per-sample gradients, with a batching rule (no warning)."""
    mu, logvar = leaf((5, 4), device, 1).detach(), leaf((5, 4), device, 2).detach()
    pm = leaf((4,), device, 3, 0.5).detach()

    def loss(m, lv):
        return vae_ext.gaussian_kl(m[None], lv[None], prior_mu=pm, prior_logvar=0.3, reduction="sum") * (m.sum() + 2.0)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # vmap's slow-path fallback warns
        got = vmap(grad(loss, argnums=(0, 1)))(mu, logvar)
    for i in range(5):
        want = autograd_grads(loss, mu[i], logvar[i])
        torch.testing.assert_close(got[0][i], want[0])
        torch.testing.assert_close(got[1][i], want[1])


@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_gradients_with_sampled_eps(ops, device):
    mu, logvar = leaf((4, 3), device, 1).detach(), leaf((4, 3), device, 2).detach()

    def loss(m, lv):
        z, kl = vae_ext.reparameterize_kl(m[None], lv[None])
        return (z**2).sum() + kl.sum()

    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        g_mu, g_lv = vmap(grad(loss, argnums=(0, 1)), randomness="same")(mu, logvar)
    torch.manual_seed(3)
    seed = vae_ext.draw_seed(device)  # "same": the one seed a plain call would draw
    zero = torch.zeros(1, 3, dtype=F64, device=device)
    eps = _ops.active().reparameterize_sampled(zero, zero, seed)[0]
    z = mu + eps * torch.exp(0.5 * logvar)
    torch.testing.assert_close(g_mu, 2 * z + mu)
    torch.testing.assert_close(g_lv, z * eps * torch.exp(0.5 * logvar) + 0.5 * torch.expm1(logvar))


@pytest.mark.parametrize("device", DEVICES)
def test_vmap_randomness(ops, device):
    zeros = torch.zeros(4, 2, 6, device=device)

    def sample(m, lv):
        return vae_ext.reparameterize(m, lv)

    torch.manual_seed(0)
    different = vmap(sample, randomness="different")(zeros, zeros)
    assert all(not torch.equal(different[0], different[i]) for i in range(1, 4))
    torch.manual_seed(0)
    same = vmap(sample, randomness="same")(zeros, zeros)
    torch.manual_seed(0)
    plain = sample(zeros[0], zeros[0])
    assert all(torch.equal(same[i], plain) for i in range(4))
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(sample)(zeros, zeros)  # randomness="error", vmap's default


# --------------------------------------------------------------------------- batching rules


def vmap_cases(device):
    """(op name, args, in_dims) for direct op calls under vmap: batched and unbatched mixes."""
    v, b, d = 3, 2, 5
    g = torch.Generator().manual_seed(4)

    def r(*shape):
        return torch.randn(shape, dtype=torch.float32, generator=g).to(device)

    seeds = torch.tensor([11, 12, 13], device=device)
    seed = torch.tensor(7, device=device)
    kl_grad = r(v, b)
    return [
        ("reparameterize", (r(v, b, d), r(b, d), r(v, b, d)), (0, None, 0)),
        ("reparameterize_sampled", (r(b, d), r(v, b, d), seeds), (None, 0, 0)),
        ("reparameterize_sampled", (r(v, b, d), r(v, b, d), seed), (0, 0, None)),
        ("reparameterize_backward", (r(v, b, d), r(b, d), None, seeds), (0, None, None, 0)),
        ("gaussian_kl", (r(b, d, v).movedim(2, 0), r(v, b, d), r(d), None), (0, 0, None, None)),
        ("gaussian_kl", (r(b, d), r(b, d), r(v, d), r(v)), (None, None, 0, 0)),
        ("gaussian_kl", (r(v, b, d), r(b, d), r(b, d), r(v, 1, d)), (0, None, None, 0)),
        ("reparameterize_kl", (r(v, b, d), r(v, b, d), None, seeds, r(v, d), None), (0, 0, None, 0, 0, None)),
        ("reparameterize_kl", (r(v, b, d), r(b, d), r(v, b, d), None, None, r(b, d)), (0, None, 0, None, None, None)),
        (
            "reparameterize_kl_backward",
            (r(v, b, d), kl_grad, r(b, d), r(v, b, d), None, seed, r(d), r(v, d), True),
            (0, 0, None, 0, None, None, None, 0, None),
        ),
        (
            "reparameterize_kl_backward",
            (None, kl_grad, r(v, b, d), r(v, b, d), None, None, None, None, False),
            (None, 0, 0, 0, None, None, None, None, None),
        ),
    ]


@needs_compiled
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(11))
def test_batching_rule_equals_map(device, case):
    name, args, in_dims = vmap_cases(device)[case]
    op = getattr(torch.ops.vae_ext, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        got = vmap(op, in_dims=in_dims)(*args)
    got = got if isinstance(got, tuple) else (got,)
    for v in range(3):
        one = op(*[a if d is None else a.select(d, v) for a, d in zip(args, in_dims)])
        one = one if isinstance(one, tuple) else (one,)
        for g, w in zip(got, one):
            if w.numel() == 0:
                continue
            torch.testing.assert_close(g[v], w, rtol=0, atol=0)


@needs_compiled
def test_direct_op_call_under_grad_transform_names_the_functional_api():
    mu = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="functional API"):
        grad(lambda m: torch.ops.vae_ext.gaussian_kl(m, m, None, None).sum())(mu)


@needs_compiled
def test_dual_tensors_on_a_direct_op_call_raise_not_drop_the_tangent():
    import torch.autograd.forward_ad as fwad

    mu = torch.randn(2, 3)
    with fwad.dual_level(), pytest.raises(RuntimeError, match="forward-mode AD"):
        torch.ops.vae_ext.gaussian_kl(fwad.make_dual(mu, torch.ones_like(mu)), mu, None, None)


# --------------------------------------------------------------------------- torch.compile


def tiny_vae(device):
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.ELU(), torch.nn.Linear(12, 8))
    decoder = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Unflatten(1, (1, 4, 4)))
    return vae_ext.VAE(encoder, decoder, latent_dim=4, prior="learnable").to(device)


def graph_breaks(fn, *args):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    return explanation.graph_break_count, [str(b.reason)[:200] for b in explanation.break_reasons]


def test_no_graph_breaks_with_sampled_eps(ops):
    mu, logvar = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    latent = vae_ext.GaussianLatent(4, prior="learnable")
    model = tiny_vae("cpu")
    x = torch.rand(6, 1, 4, 4)
    for fn, args in (
        (lambda m, lv: vae_ext.reparameterize(m, lv), (mu, logvar)),
        (lambda m, lv: vae_ext.reparameterize_kl(m, lv, reduction="mean"), (mu, logvar)),
        (lambda m, lv: vae_ext.gaussian_kl(m, lv, prior_mu=0.5), (mu, logvar)),
        (lambda h: latent(h), (torch.randn(6, 8),)),
        (lambda x: model(x).loss, (x,)),
    ):
        assert graph_breaks(fn, *args) == (0, [])


def training_step(model, lr=0.05):
    """Forward, loss, backward and an SGD update: one step, as one graph under fullgraph=True."""

    def step(x):
        loss = model(x).loss
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(lr * p.grad)
                p.grad = None
        return loss.detach()

    return step


@pytest.mark.parametrize("device", DEVICES)
@torch._dynamo.config.patch(trace_autograd_ops=True)  # loss.backward() inside the graph
@torch._inductor.config.patch(fallback_random=True)
def test_fullgraph_training_step_matches_eager(ops, device):
    """The compiled step is the eager step (its only random op is the seed's draw, which is
    eager's: tests/test_compiled_stream.py; fallback_random only guards other random ops)."""
    x = torch.rand(6, 1, 4, 4, device=device)
    eager_model, compiled_model = tiny_vae(device), tiny_vae(device)
    eager_step = training_step(eager_model)
    compiled_step = torch.compile(training_step(compiled_model), fullgraph=True)
    for i in range(3):
        torch.manual_seed(100 + i)
        want = eager_step(x)
        torch.manual_seed(100 + i)
        got = compiled_step(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for p, q in zip(compiled_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_stream_is_reproducible_and_its_eps_is_the_ops(ops, device):
    """Under Inductor the same manual_seed gives the same ε on every run, and that ε is the
    op's ε for the seed the graph drew."""

    def fn(m, lv):
        seed = vae_ext.draw_seed(m.device)
        return seed, _ops.active().reparameterize_sampled(m, lv, seed)

    compiled = torch.compile(fn, fullgraph=True)
    zeros = torch.zeros(3, 7, device=device)
    torch.manual_seed(5)
    seed_a, z_a = compiled(zeros, zeros)
    torch.manual_seed(5)
    seed_b, z_b = compiled(zeros, zeros)
    seed_c, z_c = compiled(zeros, zeros)
    assert torch.equal(seed_a, seed_b) and torch.equal(z_a, z_b)
    assert not torch.equal(z_a, z_c)
    assert torch.equal(z_a, _ops.active().reparameterize_sampled(zeros, zeros, seed_a))


def test_user_generator_under_fullgraph_names_the_cause(ops):
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(2, 3)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="cannot trace a draw from a user-supplied generator"):
        torch.compile(lambda m: vae_ext.reparameterize(m, m, generator=gen), fullgraph=True)(mu)
    torch._dynamo.reset()
    compiled = torch.compile(lambda m: vae_ext.reparameterize(m, m, generator=gen))  # a graph break, same values
    gen.manual_seed(1)
    got = compiled(mu)
    gen.manual_seed(1)
    want = vae_ext.reparameterize(mu, mu, generator=gen)
    # The same seed; the fallback's ε compiled by Inductor may differ in the last bits (fused float ops).
    tol = 0 if ops is _ops.compiled else 1e-6
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_double_backward_through_compile_is_right_or_an_error(ops):
    """torch.compile's AOTAutograd has no double backward for custom ops: it raises (compiled
    ops); a graph of plain tensor ops (the fallback) gives the eager value."""
    logvar = torch.randn(3, 4, dtype=F64, requires_grad=True)

    def fn(lv):
        return vae_ext.gaussian_kl(lv, lv, reduction="sum")

    (g,) = torch.autograd.grad(fn(logvar), logvar, create_graph=True)
    (want,) = torch.autograd.grad((g**2).sum(), logvar)
    (g,) = torch.autograd.grad(torch.compile(fn)(logvar), logvar, create_graph=True)
    try:
        (got,) = torch.autograd.grad((g**2).sum(), logvar)
    except RuntimeError as error:
        assert "double backward" in str(error)
    else:
        torch.testing.assert_close(got, want)
