"""Posterior distributions whose sample and KL run the fused ops.

* ``DiagonalGaussian(mu, logvar)``: a ``torch.distributions.Distribution``, the same
  distribution as ``Independent(Normal(mu, exp(logvar / 2)), mu.dim() - 1)``;
  ``kl_divergence`` against it, ``Independent(Normal)`` and ``Normal`` runs ``gaussian_kl``.
* ``DiagonalGaussianDistribution(parameters)``: a drop-in for the posterior class of the same
  name in diffusers and latent-diffusion (``AutoencoderKL``), reading the two halves of
  ``parameters`` in place.

See docs/distributions.md.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, Independent, Normal, constraints, register_kl

from . import _ops
from ._args import check_tensor
from ._numerics import LOG_2PI, log_normal, to_compute
from .functional import draw_seed, gaussian_kl

# diffusers' and latent-diffusion's clamp of the posterior's logvar.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
_NO_SHAPE = torch.Size()
# logvar = -inf is sigma = 0, which Normal's scale constraint (positive) rejects too; NaN fails both.
_LOG_VARIANCE = constraints.greater_than(-math.inf)


class _Independent(constraints._IndependentConstraint):
    """torch's ``constraints.independent``, which also checks an empty batch (torch's own
    check fails to reshape one)."""

    def check(self, value):
        if value.numel() == 0:
            return torch.ones(value.shape[: value.dim() - self.event_dim], dtype=torch.bool, device=value.device)
        return super().check(value)


def _sample(mu, logvar, generator=None):
    """z = mu + ε·σ through the fused op, ε in the logical [B, ...] order whatever the layout
    (docs/design.md section 4): rows that are not contiguous blocks (channels_last) are copied
    by the op, as an in-place read would index ε in memory order (docs/distributions.md)."""
    return _ops.active().reparameterize_sampled(mu, logvar, draw_seed(mu.device, generator))


def _kl(mu, logvar, prior_mu=None, prior_logvar=None):
    """Per-sample KL [B] of latents [B, ...] in the compute dtype, through the fused op (which
    copies rows that are not contiguous blocks, so the sum runs in the logical order)."""
    return gaussian_kl(mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar, reduction="none")


def _sample_n(mu, logvar, n, generator=None):
    """n independent draws [n, *mu.shape] in one call: the op sees n rows that all read the
    same flat (mu, logvar) through a row stride of 0, and one seed gives every element of the
    [n, numel] block its own ε."""
    flat_mu, flat_logvar = mu.reshape(1, -1).expand(n, -1), logvar.reshape(1, -1).expand(n, -1)
    return _sample(flat_mu, flat_logvar, generator).view(n, *mu.shape)


def _sum_rightmost(t, dims):
    return t.sum(tuple(range(-dims, 0))) if dims else t


def _check_tensor(t, name):
    check_tensor(t, name)  # a dense tensor of a dtype the ops take (vae_ext/_args.py)


def _check_event_dims(event_dims, dim):
    if event_dims is None:
        if dim < 1:
            raise ValueError("mu must have a batch dimension (dim >= 1), got 0-d tensors; or pass event_dims=0")
        return dim - 1
    if isinstance(event_dims, bool) or not isinstance(event_dims, int):
        raise TypeError(f"event_dims must be None or an int, got {type(event_dims).__name__}")
    if not 0 <= event_dims <= dim:
        raise ValueError(f"event_dims must be in [0, mu.dim()] = [0, {dim}], got {event_dims}")
    return event_dims


# --------------------------------------------------------------------------- torch.distributions


class DiagonalGaussian(Distribution):
    """N(mu, diag(exp(logvar))) over the last ``event_dims`` dimensions of ``mu``.

    The distribution of ``Independent(Normal(mu, exp(logvar / 2)), event_dims)``, parameterized
    by the log variance: ``event_shape = mu.shape[mu.dim() - event_dims:]`` and ``batch_shape``
    the dimensions before it, of any rank. ``event_dims=None`` (the default) is
    ``mu.dim() - 1``: one batch dimension, ``batch_shape = mu.shape[:1]``. ``rsample`` draws ε
    in the fused kernel (its backward regenerates ε instead of saving it), over the batch
    dimensions flattened into rows; ``kl_divergence`` to another DiagonalGaussian, an
    ``Independent(Normal)`` or a ``Normal`` runs the fused KL. mu and logvar may be strided
    views (``h.chunk(2, dim=1)``). ``log_prob``, ``entropy`` and the KL are in the compute
    dtype (float32 for half types), so they do not overflow where float32 does not.
    """

    has_rsample = True

    def __init__(self, mu, logvar, validate_args=None, *, event_dims=None):
        _check_tensor(mu, "mu")
        _check_tensor(logvar, "logvar")
        if logvar.dtype != mu.dtype:
            raise TypeError(f"logvar must have mu's dtype {mu.dtype}, got {logvar.dtype}")
        if logvar.device != mu.device:
            raise ValueError(f"logvar must be on mu's device {mu.device}, got {logvar.device}")
        if mu.shape != logvar.shape:
            mu, logvar = torch.broadcast_tensors(mu, logvar)
        self._event_dims = _check_event_dims(event_dims, mu.dim())
        self.mu, self.logvar = mu, logvar
        if mu.is_meta:  # tracing: no values to validate (the check would read one)
            validate_args = False
        split = mu.dim() - self._event_dims
        super().__init__(mu.shape[:split], mu.shape[split:], validate_args=validate_args)

    @property
    def arg_constraints(self):
        return {
            "mu": _Independent(constraints.real, self._event_dims),
            "logvar": _Independent(_LOG_VARIANCE, self._event_dims),
        }

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiagonalGaussian, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new._event_dims = self._event_dims
        new.mu, new.logvar = self.mu.expand(shape), self.logvar.expand(shape)
        super(DiagonalGaussian, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    # As Independent's: the event_dim is the instance's, not known from the class.
    @constraints.dependent_property(is_discrete=False)
    def support(self):
        return _Independent(constraints.real, self._event_dims)

    @property
    def mean(self):
        return self.mu

    @property
    def mode(self):
        return self.mu

    @property
    def stddev(self):
        return torch.exp(0.5 * self.logvar)

    @property
    def variance(self):
        return torch.exp(self.logvar)

    def _rows(self, t):
        """t [*batch, *event] as the ops' [rows, *event] (a view where the batch dims merge)."""
        return t.reshape(-1, *self.event_shape) if len(self.batch_shape) != 1 else t

    def rsample(self, sample_shape=_NO_SHAPE, *, generator=None):
        """Draws of shape sample_shape + batch_shape + event_shape, differentiable in mu and
        logvar; ε from ``generator`` (or the device's default) through one seed per call."""
        sample_shape = torch.Size(sample_shape)
        shape = self._extended_shape(sample_shape)
        if not sample_shape:
            return _sample(self._rows(self.mu), self._rows(self.logvar), generator).view(shape)
        return _sample_n(self.mu, self.logvar, sample_shape.numel(), generator).view(shape)

    def sample(self, sample_shape=_NO_SHAPE, *, generator=None):
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def log_prob(self, value):
        if self._validate_args and value.numel():  # torch's check fails on empty values
            self._validate_sample(value)
        logvar = to_compute(self.logvar)
        d = to_compute(value) - to_compute(self.mu)
        if d.dtype != logvar.dtype:
            logvar = logvar.to(d.dtype)
        return _sum_rightmost(log_normal(d, None, logvar), self._event_dims)

    def entropy(self):
        entropy = 0.5 * (1.0 + LOG_2PI) + 0.5 * to_compute(self.logvar)
        return _sum_rightmost(entropy, self._event_dims).expand(self.batch_shape)


# --------------------------------------------------------------------------- kl_divergence


def _broadcast_shape(*shapes):
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError as error:
        raise ValueError(f"kl_divergence: parameter shapes {[tuple(s) for s in shapes]} do not broadcast") from error


def _as_prior(t, shape, event_dims):
    """A parameter broadcastable to ``shape`` = [*batch, *event] as the op's prior argument for
    the rows [prod(batch), *event]: a 0-d tensor when it holds one value (gaussian_kl moves a
    CPU one to the latents' device), [1, *event] when it does not vary over the batch, else the
    full rows."""
    if _broadcast_shape(t.shape, shape) != shape:
        raise ValueError(f"a prior parameter of shape {tuple(t.shape)} does not broadcast to {tuple(shape)}")
    if t.numel() == 1 or (t.numel() > 1 and all(s == 0 for s, n in zip(t.stride(), t.shape) if n > 1)):
        return t.reshape(-1)[0]
    t = t.reshape((1,) * (len(shape) - t.dim()) + tuple(t.shape))
    split = len(shape) - event_dims
    event = shape[split:]
    if all(n == 1 or s == 0 for n, s in zip(t.shape[:split], t.stride()[:split])):
        return t[(0,) * split].unsqueeze(0).expand(1, *event) if split else t.expand(1, *event)
    return t.expand(shape).reshape(-1, *event)


def _fused_kl(mu, logvar, prior_mu, prior_logvar, event_dims):
    """KL of N(mu, e^logvar) to N(prior_mu, e^prior_logvar) summed over the event_dims
    trailing dims, of the batch shape the four broadcast to, in the compute dtype."""
    shape = _broadcast_shape(mu.shape, logvar.shape, prior_mu.shape, prior_logvar.shape)
    if len(shape) < event_dims:
        raise ValueError(
            f"kl_divergence: the parameters broadcast to {tuple(shape)}, fewer than the {event_dims} event dimensions"
        )
    batch, event = shape[: len(shape) - event_dims], shape[len(shape) - event_dims :]
    rows = (-1, *event)
    mu, logvar = mu.expand(shape).reshape(rows), logvar.expand(shape).reshape(rows)
    prior_mu, prior_logvar = (_as_prior(p, shape, event_dims) for p in (prior_mu, prior_logvar))
    return gaussian_kl(mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar, reduction="none").view(batch)


def _normal_logvar(normal):
    return 2.0 * torch.log(normal.scale)


def _independent_normal(q, event_dims):
    if not isinstance(q.base_dist, Normal):
        raise NotImplementedError(f"kl_divergence(DiagonalGaussian, Independent({type(q.base_dist).__name__}))")
    if q.reinterpreted_batch_ndims != event_dims:
        raise ValueError(
            f"kl_divergence: Independent(Normal) with batch_shape {tuple(q.batch_shape)} and event_shape "
            f"{tuple(q.event_shape)} does not match a DiagonalGaussian with {event_dims} event dims"
        )
    return q.base_dist


def _compact(t):
    """t broadcastable to its shape with its stride-0 (expanded) dims kept at size 1, so
    elementwise math on it runs once per distinct value."""
    if t.numel() == 1:
        return t.reshape(())
    return t[tuple(slice(0, 1) if s == 0 and n > 1 else slice(None) for s, n in zip(t.stride(), t.shape))]


def _log_scale_prior(normal, dtype):
    # In the posterior's dtype: Normal(0.0, 1.0) holds float32 scalars.
    return 2.0 * torch.log(_compact(normal.scale).to(dtype))


@register_kl(DiagonalGaussian, DiagonalGaussian)
def _kl_diagonal_diagonal(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(f"kl_divergence: event shapes {tuple(p.event_shape)} and {tuple(q.event_shape)} differ")
    return _fused_kl(p.mu, p.logvar, q.mu, q.logvar, len(p.event_shape))


def _kl_to_normal(p, normal):
    event_dims = len(p.event_shape)
    shape = _broadcast_shape(p.mu.shape, normal.loc.shape)
    if shape[len(shape) - event_dims :] != p.event_shape:
        raise ValueError(
            f"kl_divergence: a Normal of batch_shape {tuple(normal.batch_shape)} does not broadcast to the "
            f"DiagonalGaussian's event shape {tuple(p.event_shape)}"
        )
    return _fused_kl(p.mu, p.logvar, normal.loc, _log_scale_prior(normal, p.mu.dtype), event_dims)


@register_kl(DiagonalGaussian, Independent)
def _kl_diagonal_independent(p, q):
    """KL to Independent(Normal) with p's event dims, its batch_shape broadcast with p's."""
    return _kl_to_normal(p, _independent_normal(q, len(p.event_shape)))


@register_kl(DiagonalGaussian, Normal)
def _kl_diagonal_normal(p, q):
    """KL to a factorized Normal read as the distribution of p's event: q's batch_shape must
    broadcast to p's [*batch, *event] (a scalar Normal(0, 1) is the standard prior)."""
    return _kl_to_normal(p, q)


@register_kl(Independent, DiagonalGaussian)
def _kl_independent_diagonal(p, q):
    base = _independent_normal(p, len(q.event_shape))
    return _fused_kl(base.loc, _normal_logvar(base), q.mu, q.logvar, len(q.event_shape))


# --------------------------------------------------------------------------- diffusers' posterior


class DiagonalGaussianDistribution:
    """Drop-in for ``DiagonalGaussianDistribution`` of diffusers (``AutoencoderKL``'s posterior,
    diffusers/models/autoencoders/vae.py) and latent-diffusion, on the fused ops.

    The same constructor, attributes and methods with the same values and gradients, the
    logvar clamp to [-30, 20] included. Differences: ``std``, ``var`` and the clamped
    ``logvar`` are computed when first read instead of in the constructor (a value read under
    ``no_grad`` or ``inference_mode`` is not reused with grad enabled); ``sample`` draws ε in
    the kernel from a seed taken from ``generator`` (the same distribution, other values than
    diffusers' ``randn_tensor`` for the same generator, in the logical order whatever the
    layout); ``kl`` and ``nll`` are in the compute dtype (float32 for half types, where
    diffusers rounds to the parameters' dtype and can overflow); ``kl`` of 4-d latents runs the
    fused KL (the per-sample sum diffusers takes over dims [1, 2, 3]); other shapes, a
    deterministic ``other`` and ``nll`` use diffusers' own formulas.
    """

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, self._raw_logvar = torch.chunk(parameters, 2, dim=1)
        self.deterministic = deterministic
        # name -> (value, whether it may be reused with grad enabled: made so, or assigned)
        self._lazy = {}

    @classmethod
    def from_posterior(cls, posterior):
        """The fused posterior of another one (``vae.encode(x).latent_dist`` of diffusers)."""
        return cls(posterior.parameters, posterior.deterministic)

    def _get(self, name, compute):
        """The lazy attribute ``name``, reused when it was assigned or made with grad enabled,
        or when grad is disabled now; else computed afresh. A tensor made under ``no_grad``
        carries no graph (one made under ``inference_mode`` cannot even be saved for
        backward): reusing it with grad enabled would cut the gradient. (The grad mode alone
        decides, as Dynamo cannot trace ``torch.is_inference_mode_enabled()``.)"""
        grad = torch.is_grad_enabled()
        entry = self._lazy.get(name)
        if entry is not None and (entry[1] or not grad):
            return entry[0]
        value = compute()
        self._lazy[name] = (value, grad)
        return value

    # logvar, std and var are assignable like diffusers' attributes. Plain properties, not
    # functools.cached_property: its lock (Python < 3.12) breaks torch.compile(fullgraph=True).
    @property
    def logvar(self) -> torch.Tensor:
        return self._get("logvar", self._clamped_logvar)

    @logvar.setter
    def logvar(self, value):
        self._lazy["logvar"] = (value, True)

    @property
    def std(self) -> torch.Tensor:
        return self._get("std", lambda: self._zeros() if self.deterministic else torch.exp(0.5 * self.logvar))

    @std.setter
    def std(self, value):
        self._lazy["std"] = (value, True)

    @property
    def var(self) -> torch.Tensor:
        return self._get("var", lambda: self._zeros() if self.deterministic else torch.exp(self.logvar))

    @var.setter
    def var(self, value):
        self._lazy["var"] = (value, True)

    def _clamped_logvar(self):
        # A copy, as in diffusers: its gradient is zero outside [-30, 20]. Written in the
        # logical (contiguous) order, so the ops read it in place for any layout of
        # parameters (docs/distributions.md measures what it costs).
        return torch.clamp(self._raw_logvar, LOGVAR_MIN, LOGVAR_MAX).contiguous()

    def _zeros(self):
        return torch.zeros_like(self.mean, device=self.parameters.device, dtype=self.parameters.dtype)

    def sample(self, generator=None) -> torch.Tensor:
        """mean + ε·std; a list of generators (one per batch row) as diffusers' randn_tensor."""
        if self.deterministic:
            return self.mean.clone(memory_format=torch.contiguous_format)
        if isinstance(generator, (list, tuple)) and len(generator) == 1:
            generator = generator[0]
        if isinstance(generator, (list, tuple)):
            if len(generator) != self.mean.shape[0]:
                raise ValueError(
                    f"generator: a list of {len(generator)} generators for a batch of {self.mean.shape[0]}"
                )
            rows = zip(self.mean.split(1), self.logvar.split(1), generator)
            return torch.cat([_sample(mu, logvar, gen) for mu, logvar, gen in rows])
        return _sample(self.mean, self.logvar, generator)

    def kl(self, other=None) -> torch.Tensor:
        """KL(self || other), other = N(0, I) when None, summed over dims [1, 2, 3], in the
        compute dtype."""
        if self.deterministic:
            return torch.Tensor([0.0])
        fused = self.mean.dim() == 4 and (
            other is None or (not getattr(other, "deterministic", False) and other.mean.shape == self.mean.shape)
        )
        if not fused:
            return self._eager_kl(other)
        prior = (None, None) if other is None else (other.mean, other.logvar)
        return _kl(self.mean, self.logvar, *prior)

    def _eager_kl(self, other):
        # diffusers' formulas, for the shapes and cases the fused op does not take, in the
        # compute dtype (var = exp(logvar) there: float16 cannot hold e^20).
        mean, logvar = to_compute(self.mean), to_compute(self.logvar)
        if other is None:
            return 0.5 * torch.sum(torch.pow(mean, 2) + torch.exp(logvar) - 1.0 - logvar, dim=[1, 2, 3])
        other_mean, other_logvar = to_compute(other.mean), to_compute(other.logvar)
        other_var = to_compute(other.var)
        return 0.5 * torch.sum(
            torch.pow(mean - other_mean, 2) / other_var + torch.exp(logvar) / other_var - 1.0 - logvar + other_logvar,
            dim=[1, 2, 3],
        )

    def nll(self, sample: torch.Tensor, dims=(1, 2, 3)) -> torch.Tensor:
        """diffusers' negative log-likelihood of ``sample``, in the compute dtype."""
        if self.deterministic:
            return torch.Tensor([0.0])
        logvar = to_compute(self.logvar)
        d = to_compute(sample) - to_compute(self.mean)
        return 0.5 * torch.sum(LOG_2PI + logvar + torch.pow(d, 2) / torch.exp(logvar), dim=list(dims))

    def mode(self) -> torch.Tensor:
        return self.mean

    def as_distribution(self, validate_args=None) -> DiagonalGaussian:
        """The same posterior as a torch.distributions DiagonalGaussian (clamped logvar)."""
        return DiagonalGaussian(self.mean, self.logvar, validate_args=validate_args)
