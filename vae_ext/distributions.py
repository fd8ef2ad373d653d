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

import torch
from torch.distributions import Distribution, Independent, Normal, constraints, register_kl

from . import _ops
from ._args import check_tensor
from ._numerics import LOG_2PI, to_compute
from .functional import draw_seed, gaussian_kl

# diffusers' and latent-diffusion's clamp of the posterior's logvar.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
_NO_SHAPE = torch.Size()
# The CPU kernels sum each row's KL in 16 lanes (kLanes in csrc/cpu/kernels_cpu.cpp): on rows
# of fewer channels that per-row reduction costs more than the op's copy of the two halves.
# The sampler packs short rows into shared tiles and takes rows of any length.
_KL_MIN_CHANNELS = 16


def _seed(device, generator):
    """A Philox seed on ``device`` from ``generator`` (which may live on another device, as
    diffusers allows: a CPU generator for CUDA latents)."""
    if generator is None or generator.device.type == torch.device(device).type:
        return draw_seed(device, generator)
    return draw_seed(generator.device, generator).to(device)


def _rows_are_blocks(t):
    """csrc/op_args.h's rows_are_contiguous_blocks: the ops read t in place."""
    expected = 1
    for size, stride in zip(reversed(t.shape[1:]), reversed(t.stride()[1:])):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def _channel_rows(t):
    """A [B·H·W…, C] view of t [B, C, *spatial] when its channels are innermost in memory, as
    in the channels_last moments of diffusers' AutoencoderKL (its attention block hands
    channels_last on to conv_out) and in their chunk(2, dim=1) halves; else None."""
    if t.dim() < 3:
        return None
    moved = t.movedim(1, -1)
    if moved.shape[-1] != 1 and moved.stride(-1) != 1:
        return None
    expected = None
    for size, stride in zip(reversed(moved.shape[:-1]), reversed(moved.stride()[:-1])):
        if size == 1:
            continue
        if expected is not None and stride != expected:
            return None
        expected = stride * size
    return moved.reshape(-1, moved.shape[-1])  # a view: the dims before C merge


def _in_place_views(mu, *others):
    """Views of mu and others (same shape as mu, 0-d or None) that the ops read without a copy:
    the tensors themselves when their rows are contiguous blocks, else [B·H·W…, C] views of
    channel-innermost layouts, else None (the op copies)."""
    full = [t for t in (mu, *others) if t is not None and t.dim() > 0]
    if mu.numel() == 0 or all(_rows_are_blocks(t) for t in full):
        return None
    if any(t.shape != mu.shape for t in full):
        return None
    views = [t if t is None or t.dim() == 0 else _channel_rows(t) for t in (mu, *others)]
    return None if any(v is None for v, t in zip(views, (mu, *others)) if t is not None) else views


def _sample(mu, logvar, generator=None):
    """z = mu + ε·σ through the fused op. ε is indexed in the order the op reads: logical
    [B, ...] order, or (b, h, w, c) for channel-innermost latents."""
    seed = _seed(mu.device, generator)
    views = _in_place_views(mu, logvar)
    if views is None:
        return _ops.ops.reparameterize_sampled(mu, logvar, seed)
    z = _ops.ops.reparameterize_sampled(*views, seed)
    return z.view(mu.shape[0], *mu.shape[2:], mu.shape[1]).movedim(-1, 1)


def _kl(mu, logvar, prior_mu=None, prior_logvar=None):
    """Per-sample KL [B] (compute dtype) through the fused op, channel-innermost latents with
    at least _KL_MIN_CHANNELS channels read in place as rows of C (their KLs summed per sample)."""
    wide = mu.dim() >= 3 and mu.shape[1] >= _KL_MIN_CHANNELS
    views = _in_place_views(mu, logvar, prior_mu, prior_logvar) if wide else None
    if views is None:
        return gaussian_kl(mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar, reduction="none")
    mu_rows, logvar_rows, pm_rows, plv_rows = views
    kl_rows = gaussian_kl(mu_rows, logvar_rows, prior_mu=pm_rows, prior_logvar=plv_rows, reduction="none")
    return kl_rows.view(mu.shape[0], -1).sum(1)


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


# --------------------------------------------------------------------------- torch.distributions


class DiagonalGaussian(Distribution):
    """N(mu, diag(exp(logvar))) over each row of ``mu`` [B, ...].

    ``batch_shape = mu.shape[:1]``, ``event_shape = mu.shape[1:]``: the distribution of
    ``Independent(Normal(mu, exp(logvar / 2)), mu.dim() - 1)``, parameterized by the log
    variance. ``rsample`` draws ε in the fused kernel (its backward regenerates ε instead of
    saving it); ``kl_divergence`` to another DiagonalGaussian, an ``Independent(Normal)`` or
    a ``Normal`` runs the fused KL. mu and logvar may be strided views (``h.chunk(2, dim=1)``).
    """

    arg_constraints = {"mu": constraints.real, "logvar": constraints.real}
    has_rsample = True

    def __init__(self, mu, logvar, validate_args=None):
        _check_tensor(mu, "mu")
        _check_tensor(logvar, "logvar")
        if logvar.dtype != mu.dtype:
            raise TypeError(f"logvar must have mu's dtype {mu.dtype}, got {logvar.dtype}")
        if logvar.device != mu.device:
            raise ValueError(f"logvar must be on mu's device {mu.device}, got {logvar.device}")
        if mu.shape != logvar.shape:
            mu, logvar = torch.broadcast_tensors(mu, logvar)
        if mu.dim() < 1:
            raise ValueError("mu must have a batch dimension (dim >= 1), got 0-d tensors")
        self.mu, self.logvar = mu, logvar
        if mu.is_meta:  # tracing: no values to validate (the check would read one)
            validate_args = False
        super().__init__(mu.shape[:1], mu.shape[1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if len(batch_shape) != 1:
            raise ValueError(f"a DiagonalGaussian has a batch_shape of one dimension, got {tuple(batch_shape)}")
        new = self._get_checked_instance(DiagonalGaussian, _instance)
        new.mu = self.mu.expand(batch_shape + self.event_shape)
        new.logvar = self.logvar.expand(batch_shape + self.event_shape)
        super(DiagonalGaussian, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

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

    def rsample(self, sample_shape=_NO_SHAPE, *, generator=None):
        """Draws of shape sample_shape + batch_shape + event_shape, differentiable in mu and
        logvar; ε from ``generator`` (or the device's default) through one seed per call."""
        sample_shape = torch.Size(sample_shape)
        if not sample_shape:
            return _sample(self.mu, self.logvar, generator)
        return _sample_n(self.mu, self.logvar, sample_shape.numel(), generator).view(self._extended_shape(sample_shape))

    def sample(self, sample_shape=_NO_SHAPE, *, generator=None):
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def log_prob(self, value):
        if self._validate_args and value.numel():  # torch's check fails on empty values
            self._validate_sample(value)
        dtype = torch.promote_types(value.dtype, self.mu.dtype)
        logvar = to_compute(self.logvar)
        d = to_compute(value) - to_compute(self.mu)
        log_p = -0.5 * (d * d * torch.exp(-logvar) + logvar + LOG_2PI)
        return _sum_rightmost(log_p, len(self.event_shape)).to(dtype)

    def entropy(self):
        entropy = 0.5 * (1.0 + LOG_2PI) + 0.5 * to_compute(self.logvar)
        return _sum_rightmost(entropy, len(self.event_shape)).to(self.mu.dtype)


# --------------------------------------------------------------------------- kl_divergence


def _broadcast_shape(*shapes):
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError as error:
        raise ValueError(f"kl_divergence: parameter shapes {[tuple(s) for s in shapes]} do not broadcast") from error


def _as_prior(t, shape):
    """A parameter broadcastable to ``shape`` = [B, *event] as the op's prior argument: a 0-d
    view when it holds one value, [1, *event] when it does not vary over the batch, else full."""
    if _broadcast_shape(t.shape, shape) != shape:
        raise ValueError(f"a prior parameter of shape {tuple(t.shape)} does not broadcast to {tuple(shape)}")
    if t.numel() == 1 or (t.numel() > 1 and all(s == 0 for s, n in zip(t.stride(), t.shape) if n > 1)):
        return t.reshape(-1)[0]
    t = t.reshape((1,) * (len(shape) - t.dim()) + tuple(t.shape))
    if t.shape[0] == 1 or t.stride(0) == 0:
        return t[:1].expand(1, *shape[1:])
    return t.expand(shape)


def _fused_kl(mu, logvar, prior_mu, prior_logvar, event_dims):
    """Per-sample KL [B] of N(mu, e^logvar) to N(prior_mu, e^prior_logvar), all four broadcast
    to [B, *event] (event_dims trailing dims), in mu's dtype."""
    shape = _broadcast_shape(mu.shape, logvar.shape, prior_mu.shape, prior_logvar.shape)
    if len(shape) != event_dims + 1:
        raise ValueError(
            f"kl_divergence: the parameters broadcast to {tuple(shape)}, which is not one batch "
            f"dimension followed by {event_dims} event dimensions"
        )
    mu, logvar = mu.expand(shape), logvar.expand(shape)
    return _kl(mu, logvar, _as_prior(prior_mu, shape), _as_prior(prior_logvar, shape)).to(mu.dtype)


def _normal_logvar(normal):
    return 2.0 * torch.log(normal.scale)


def _independent_normal(q, event_dims):
    if not isinstance(q.base_dist, Normal):
        raise NotImplementedError(f"kl_divergence(DiagonalGaussian, Independent({type(q.base_dist).__name__}))")
    if q.reinterpreted_batch_ndims != event_dims or len(q.batch_shape) > 1:
        raise ValueError(
            f"kl_divergence: Independent(Normal) with batch_shape {tuple(q.batch_shape)} and event_shape "
            f"{tuple(q.event_shape)} does not match a DiagonalGaussian with {event_dims} event dims"
        )
    return q.base_dist


def _log_scale_prior(normal, shape, dtype):
    # In the posterior's dtype: Normal(0.0, 1.0) holds float32 scalars.
    return 2.0 * torch.log(_as_prior(normal.scale, shape).to(dtype))


@register_kl(DiagonalGaussian, DiagonalGaussian)
def _kl_diagonal_diagonal(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(f"kl_divergence: event shapes {tuple(p.event_shape)} and {tuple(q.event_shape)} differ")
    return _fused_kl(p.mu, p.logvar, q.mu, q.logvar, len(p.event_shape))


def _kl_to_normal(p, normal):
    event_dims = len(p.event_shape)
    shape = _broadcast_shape(p.mu.shape, normal.loc.shape)
    if len(shape) != event_dims + 1:
        raise ValueError(
            f"kl_divergence: a Normal of batch_shape {tuple(normal.batch_shape)} does not broadcast to the "
            f"DiagonalGaussian's [batch, *event] = {tuple(p.mu.shape)}"
        )
    return _fused_kl(p.mu, p.logvar, normal.loc, _log_scale_prior(normal, shape, p.mu.dtype), event_dims)


@register_kl(DiagonalGaussian, Independent)
def _kl_diagonal_independent(p, q):
    """KL to Independent(Normal) whose event_shape is p's and batch_shape () or broadcastable to p's."""
    return _kl_to_normal(p, _independent_normal(q, len(p.event_shape)))


@register_kl(DiagonalGaussian, Normal)
def _kl_diagonal_normal(p, q):
    """KL to a factorized Normal read as the distribution of p's event: q's batch_shape must
    broadcast to p's [batch, *event] (a scalar Normal(0, 1) is the standard prior)."""
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
    ``logvar`` are computed when first read instead of in the constructor; ``sample`` draws ε
    in the kernel from a seed taken from ``generator`` (the same distribution, other values
    than diffusers' ``randn_tensor`` for the same generator); ``kl`` of 4-d latents runs the
    fused KL (the per-sample sum diffusers takes over dims [1, 2, 3]); other shapes, a
    deterministic ``other`` and ``nll`` use diffusers' own formulas.
    """

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, self._raw_logvar = torch.chunk(parameters, 2, dim=1)
        self.deterministic = deterministic
        self._logvar = self._std = self._var = None

    @classmethod
    def from_posterior(cls, posterior):
        """The fused posterior of another one (``vae.encode(x).latent_dist`` of diffusers)."""
        return cls(posterior.parameters, posterior.deterministic)

    # logvar, std and var are computed on first read (diffusers computes all three in the
    # constructor) and assignable like diffusers' attributes. Plain properties, not
    # functools.cached_property: its lock (Python < 3.12) breaks torch.compile(fullgraph=True).
    @property
    def logvar(self) -> torch.Tensor:
        if self._logvar is None:
            # A copy, as in diffusers: its gradient is zero outside [-30, 20] and the fused ops
            # read it (docs/distributions.md measures what it costs).
            self._logvar = torch.clamp(self._raw_logvar, LOGVAR_MIN, LOGVAR_MAX)
        return self._logvar

    @logvar.setter
    def logvar(self, value):
        self._logvar = value

    @property
    def std(self) -> torch.Tensor:
        if self._std is None:
            self._std = self._zeros() if self.deterministic else torch.exp(0.5 * self.logvar)
        return self._std

    @std.setter
    def std(self, value):
        self._std = value

    @property
    def var(self) -> torch.Tensor:
        if self._var is None:
            self._var = self._zeros() if self.deterministic else torch.exp(self.logvar)
        return self._var

    @var.setter
    def var(self, value):
        self._var = value

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
        """KL(self || other), other = N(0, I) when None, summed over dims [1, 2, 3]."""
        if self.deterministic:
            return torch.Tensor([0.0])
        fused = self.mean.dim() == 4 and (
            other is None or (not getattr(other, "deterministic", False) and other.mean.shape == self.mean.shape)
        )
        if not fused:
            return self._eager_kl(other)
        prior = (None, None) if other is None else (other.mean, other.logvar)
        return _kl(self.mean, self.logvar, *prior).to(self.mean.dtype)

    def _eager_kl(self, other):
        # diffusers' formulas, for the shapes and cases the fused op does not take.
        if other is None:
            return 0.5 * torch.sum(torch.pow(self.mean, 2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])
        return 0.5 * torch.sum(
            torch.pow(self.mean - other.mean, 2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar,
            dim=[1, 2, 3],
        )

    def nll(self, sample: torch.Tensor, dims=(1, 2, 3)) -> torch.Tensor:
        if self.deterministic:
            return torch.Tensor([0.0])
        return 0.5 * torch.sum(LOG_2PI + self.logvar + torch.pow(sample - self.mean, 2) / self.var, dim=list(dims))

    def mode(self) -> torch.Tensor:
        return self.mean

    def as_distribution(self, validate_args=None) -> DiagonalGaussian:
        """The same posterior as a torch.distributions DiagonalGaussian (clamped logvar)."""
        return DiagonalGaussian(self.mean, self.logvar, validate_args=validate_args)
