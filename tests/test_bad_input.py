"""Every public entry point, driven with every kind of value a new user tries: each call either
accepts the value or raises TypeError / ValueError naming the argument (never an
AttributeError, a dispatcher RuntimeError or a NotImplementedError from deep inside, and never
a silently accepted value it must refuse).

A value goes into one argument (the role); the other arguments are well formed, on the same
device (meta for the "meta" kind) and with the same batch (0 rows for the "empty" kind)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vae_ext

B, L = 4, 3  # L != B, so a [L] tensor is never mistaken for a per-sample [B] one
ACCEPT = "accept"


def _float8():
    return torch.zeros(B, L).to(torch.float8_e4m3fn)


# kind -> (value builder taking the device and batch, whether it is a [batch, L] tensor)
KINDS = {
    "list": lambda device, batch: [[0.0] * L] * batch,
    "float": lambda device, batch: 0.5,
    "None": lambda device, batch: None,
    "numpy": lambda device, batch: np.zeros((batch, L), np.float32),
    "0d": lambda device, batch: torch.tensor(0.5, device=device),
    "1d": lambda device, batch: torch.zeros(L, device=device),
    "complex": lambda device, batch: torch.zeros(batch, L, dtype=torch.complex64, device=device),
    "bool": lambda device, batch: torch.zeros(batch, L, dtype=torch.bool, device=device),
    "int": lambda device, batch: torch.zeros(batch, L, dtype=torch.int64, device=device),
    "float8": lambda device, batch: _float8()[:batch],
    "sparse": lambda device, batch: torch.zeros(batch, L).to_sparse(),
    "meta": lambda device, batch: torch.rand(batch, L, device=device),
    "empty": lambda device, batch: torch.rand(batch, L, device=device),
    "stride0": lambda device, batch: torch.rand(1, L, device=device).expand(batch, L),
}


def _context(kind):
    """(device, batch) of the well-formed arguments beside the value."""
    return ("meta" if kind == "meta" else "cpu"), (0 if kind == "empty" else B)


def _latent(device, batch):
    return torch.randn(batch, L, device=device), torch.randn(batch, L, device=device) * 0.3


# role -> call(value, device, batch): the value in one argument of one entry point.
def _elbo(likelihood, **overrides):
    def call(v, device, batch):
        x_hat = torch.randn(batch, L, device=device)
        x = torch.rand(batch, L, device=device)
        x = x.round() if likelihood == "bernoulli" else x
        mu, logvar = _latent(device, batch)
        args = {"x_hat": x_hat, "x": x, "mu": mu, "logvar": logvar}
        kwargs = {}
        (role,) = overrides
        if role in args:
            args[role] = v
        else:
            kwargs[role] = v
        return vae_ext.ELBOLoss(likelihood)(*args.values(), **kwargs)

    return call


def _with(name, fn):
    def call(v, device, batch):
        mu, logvar = _latent(device, batch)
        args = {"mu": mu, "logvar": logvar}
        if name in args:
            args[name] = v
            return fn(args["mu"], args["logvar"])
        return fn(mu, logvar, **{name: v})

    return call


def _gaussian_latent(v, device, batch):
    return vae_ext.GaussianLatent(L)(v)


def _diagonal_gaussian(name):
    def call(v, device, batch):
        mu, logvar = _latent(device, batch)
        args = {"mu": mu, "logvar": logvar, name: v}
        q = vae_ext.DiagonalGaussian(args["mu"], args["logvar"])
        return q.rsample(), q.log_prob(q.mean)

    return call


ROLES = {
    "reparameterize(mu)": _with("mu", vae_ext.reparameterize),
    "reparameterize(logvar)": _with("logvar", vae_ext.reparameterize),
    "reparameterize(eps)": _with("eps", vae_ext.reparameterize),
    "gaussian_kl(mu)": _with("mu", vae_ext.gaussian_kl),
    "gaussian_kl(prior_mu)": _with("prior_mu", vae_ext.gaussian_kl),
    "reparameterize_kl(logvar)": _with("logvar", vae_ext.reparameterize_kl),
    "reparameterize_kl(eps)": _with("eps", vae_ext.reparameterize_kl),
    "reparameterize_kl(prior_mu)": _with("prior_mu", vae_ext.reparameterize_kl),
    "reparameterize_kl(prior_logvar)": _with("prior_logvar", vae_ext.reparameterize_kl),
    "DiagonalGaussian(mu)": _diagonal_gaussian("mu"),
    "DiagonalGaussian(logvar)": _diagonal_gaussian("logvar"),
    "GaussianLatent(h)": _gaussian_latent,
    "ELBOLoss(x_hat)": _elbo("gaussian", x_hat=None),
    "ELBOLoss(x) gaussian": _elbo("gaussian", x=None),
    "ELBOLoss(x) bernoulli": _elbo("bernoulli", x=None),
    "ELBOLoss(kl)": _elbo("gaussian", kl=None),
    "ELBOLoss(prior_logvar)": _elbo("gaussian", prior_logvar=None),
    "LinearWarmup(warmup_steps)": lambda v, device, batch: vae_ext.LinearWarmup(1.0, v),
    "CyclicalBeta(ramp_fraction)": lambda v, device, batch: vae_ext.CyclicalBeta(1.0, 10, v),
    "ConstantBeta(beta)": lambda v, device, batch: vae_ext.ConstantBeta(v),
    "ELBOLoss(beta)": lambda v, device, batch: vae_ext.ELBOLoss(beta=v),
    "VAE.sample(n)": lambda v, device, batch: _vae().sample(v),
    "VAE.log_likelihood(k)": lambda v, device, batch: _vae().log_likelihood(torch.randn(2, L), k=v),
}


def _vae():
    return vae_ext.VAE(torch.nn.Linear(L, 2 * L), torch.nn.Linear(L, L), latent_dim=L, likelihood="gaussian")


T, V = TypeError, ValueError
# The expected outcome of each kind in each kind of argument.
LATENT = {  # mu, logvar, eps, encoder features, x_hat: a floating-point [B, ...] tensor
    "list": T, "float": T, "None": T, "numpy": T, "0d": V, "1d": V, "complex": T, "bool": T, "int": T,
    "float8": T, "sparse": T, "meta": ACCEPT, "empty": ACCEPT, "stride0": ACCEPT,
}  # fmt: skip
OPTIONAL_LATENT = {**LATENT, "None": ACCEPT}  # eps: None draws it
PRIOR = {  # None, a number, or a floating-point tensor broadcastable as the docs say
    **LATENT, "float": ACCEPT, "None": ACCEPT, "0d": ACCEPT, "1d": ACCEPT,
}  # fmt: skip
DISTRIBUTION = {**LATENT, "0d": ACCEPT, "1d": ACCEPT}  # mu and logvar broadcast together
BINARY_TARGET = {**LATENT, "bool": ACCEPT, "int": ACCEPT}  # bool / integer 0-1 data converts
PER_SAMPLE_KL = {**OPTIONAL_LATENT}  # a [B] floating-point tensor or None
PER_SAMPLE_KL["stride0"] = ACCEPT
COUNT = {kind: T for kind in KINDS}  # a positive int only
NUMBER = {**COUNT, "float": ACCEPT}  # a finite number >= 0

EXPECTED = {
    "reparameterize(mu)": LATENT,
    "reparameterize(logvar)": LATENT,
    "reparameterize(eps)": OPTIONAL_LATENT,
    "gaussian_kl(mu)": LATENT,
    "gaussian_kl(prior_mu)": PRIOR,
    "reparameterize_kl(logvar)": LATENT,
    "reparameterize_kl(eps)": OPTIONAL_LATENT,
    "reparameterize_kl(prior_mu)": PRIOR,
    "reparameterize_kl(prior_logvar)": PRIOR,
    "DiagonalGaussian(mu)": DISTRIBUTION,
    "DiagonalGaussian(logvar)": DISTRIBUTION,
    "GaussianLatent(h)": LATENT,
    "ELBOLoss(x_hat)": LATENT,
    "ELBOLoss(x) gaussian": LATENT,
    "ELBOLoss(x) bernoulli": BINARY_TARGET,
    "ELBOLoss(kl)": PER_SAMPLE_KL,
    "ELBOLoss(prior_logvar)": PRIOR,
    "LinearWarmup(warmup_steps)": COUNT,
    "CyclicalBeta(ramp_fraction)": NUMBER,
    "ConstantBeta(beta)": NUMBER,
    "ELBOLoss(beta)": NUMBER,
    "VAE.sample(n)": COUNT,
    "VAE.log_likelihood(k)": COUNT,
}
# The argument name each error must carry.
ARGUMENT = {role: role.split("(")[1].split(")")[0] for role in ROLES}  # "reparameterize(mu)" -> "mu"
ARGUMENT["GaussianLatent(h)"] = "h|mu"  # mu: the view of h whose dtype the ops check

CASES = [(role, kind) for role in ROLES for kind in KINDS]


def _value(role, kind, device, batch):
    value = KINDS[kind](device, batch)
    if role == "GaussianLatent(h)" and isinstance(value, torch.Tensor) and value.dim() == 2:
        return torch.cat([value, value], dim=1)  # [B, 2·L] features
    if role == "ELBOLoss(kl)" and isinstance(value, torch.Tensor) and value.dim() == 2:
        return value[:, 0]  # a per-sample [B] value of that kind
    return value


@pytest.mark.parametrize(("role", "kind"), CASES, ids=[f"{r}-{k}" for r, k in CASES])
def test_each_entry_point_accepts_or_raises_naming_the_argument(role, kind):
    device, batch = _context(kind)
    value = _value(role, kind, device, batch)
    expected = EXPECTED[role][kind]
    call = ROLES[role]
    if expected == ACCEPT:
        call(value, device, batch)
        return
    with pytest.raises(expected, match=rf"\b({ARGUMENT[role]})\b"):
        call(value, device, batch)


def test_matrix_covers_every_kind_in_every_role():
    assert all(set(EXPECTED[role]) == set(KINDS) for role in ROLES)
    counts = {outcome: sum(EXPECTED[r][k] is outcome for r, k in CASES) for outcome in (ACCEPT, T, V)}
    assert counts[ACCEPT] > 0 and counts[T] > 0 and counts[V] > 0


# --------------------------------------------------------------------------- named cases


def test_cpu_scalar_prior_beside_meta_latents():
    # Normal(0.0, 1.0) holds CPU 0-d tensors; they work beside latents on any device.
    mu, logvar = _latent("meta", B)
    prior = torch.tensor(0.5)
    z, kl = vae_ext.reparameterize_kl(mu, logvar, prior_mu=prior, prior_logvar=prior)
    assert z.device.type == kl.device.type == "meta"
    assert vae_ext.gaussian_kl(mu, logvar, prior_mu=prior, reduction="none").device.type == "meta"
    loss = vae_ext.ELBOLoss("gaussian")(mu, mu, mu, logvar, prior_mu=prior, prior_logvar=prior)
    assert loss.device.type == "meta"


def test_a_cpu_prior_beside_latents_elsewhere_must_be_scalar():
    mu, logvar = _latent("meta", B)
    with pytest.raises(ValueError, match="prior_mu"):
        vae_ext.gaussian_kl(mu, logvar, prior_mu=torch.zeros(L))


def test_cpu_generator_for_meta_latents():
    mu, logvar = _latent("meta", B)
    gen = torch.Generator().manual_seed(0)
    assert vae_ext.reparameterize(mu, logvar, generator=gen).device.type == "meta"
    seed = vae_ext.draw_seed("meta", torch.Generator().manual_seed(0))
    assert seed.device.type == "meta" and seed.dtype == torch.int64


def test_generator_of_the_wrong_type_raises():
    mu, logvar = _latent("cpu", B)
    with pytest.raises(TypeError, match="generator"):
        vae_ext.reparameterize(mu, logvar, generator=0)


def test_prior_of_a_non_float_dtype_names_it():
    mu, logvar = _latent("cpu", B)
    with pytest.raises(TypeError, match="prior_logvar"):
        vae_ext.gaussian_kl(mu, logvar, prior_logvar=torch.zeros(L, dtype=torch.float8_e4m3fn))


def test_a_typed_runtime_error_becomes_its_type():
    # Where a check can only throw std::runtime_error (torch's stable ABI), its message starts
    # with the Python type; the functional API raises that type.
    from vae_ext import _args

    mu = torch.zeros(B, L)
    for kind in (TypeError, ValueError):
        with pytest.raises(kind, match=r"^gaussian_kl: prior_mu must"):
            _args.explain(RuntimeError(f"{kind.__name__}: gaussian_kl: prior_mu must be ..."), mu, mu)
    _args.explain(RuntimeError("CUDA error: out of memory"), mu, mu)  # returns: re-raised as it is


def test_the_functional_api_maps_a_typed_runtime_error(monkeypatch):
    from vae_ext import _ops

    def failing(*args):
        raise RuntimeError("ValueError: gaussian_kl: mu must have a batch dimension")

    monkeypatch.setattr(_ops, "active", lambda: type("Ops", (), {"gaussian_kl": staticmethod(failing)}))
    with pytest.raises(ValueError, match="batch dimension"):
        vae_ext.gaussian_kl(torch.zeros(B, L), torch.zeros(B, L))


# (call of an op set, expected type): the compiled kernels, the fallback and the fake kernels
# (torch.compile, FakeTensorMode) raise the same type for the same bad argument.
OP_CASES = {
    "integer mu": (lambda o, t: o.gaussian_kl(t["mu"].int(), t["logvar"].int(), None, None), TypeError),
    "logvar dtype": (lambda o, t: o.reparameterize(t["mu"], t["logvar"].double(), t["mu"]), TypeError),
    "eps shape": (lambda o, t: o.reparameterize(t["mu"], t["logvar"], t["mu"][:, :2]), ValueError),
    "prior shape": (lambda o, t: o.gaussian_kl(t["mu"], t["logvar"], t["mu"][:, :2], None), ValueError),
    "prior dtype": (lambda o, t: o.gaussian_kl(t["mu"], t["logvar"], None, t["logvar"].half()), TypeError),
    "seed dtype": (lambda o, t: o.reparameterize_sampled(t["mu"], t["logvar"], t["seed"].int()), TypeError),
    "0-d mu": (lambda o, t: o.gaussian_kl(t["mu"][0, 0], t["logvar"][0, 0], None, None), ValueError),
}


def _op_inputs():
    return {"mu": torch.randn(B, L), "logvar": torch.randn(B, L), "seed": torch.tensor(3)}


@pytest.mark.parametrize("case", OP_CASES)
def test_op_sets_and_fake_kernels_raise_the_same_type(case):
    from torch._subclasses.fake_tensor import FakeTensorMode

    from vae_ext import _ops

    call, expected = OP_CASES[case]
    op_sets = [_ops.fallback] + ([torch.ops.vae_ext] if _ops.compiled is not None else [])
    for ops in op_sets:
        with pytest.raises(expected):
            call(ops, _op_inputs())
    if _ops.compiled is not None:
        with FakeTensorMode() as mode:
            fake = {k: mode.from_tensor(v) for k, v in _op_inputs().items()}
            with pytest.raises(expected):
                call(torch.ops.vae_ext, fake)
