"""Pure-PyTorch reference of every vae_ext op: the fallback kernels and the test oracle.

Each function here has the signature and semantics of the op of the same name in
``torch.ops.vae_ext`` (schemas in csrc/ops.cpp). The sampler reproduces csrc/philox.h step
for step in float32 tensor ops, so its ε is bit-identical to the compiled kernels'. The KL
and gradients follow docs/design.md section 2, computed in float32 for half inputs; the KL is
the kernels' to the bit (their exp/expm1 and their summation order, csrc/row_sum.h).
"""

from __future__ import annotations

import math

import torch

from ._numerics import FLOAT_DTYPES, to_compute

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


# --------------------------------------------------------------------------- checks


def _check_dense(t, name, op):
    # The compiled ops' dispatcher refuses other layouts. Skipped under tracing, where Dynamo
    # sees dense tensors only and bans .layout in the backward graph's strict mode.
    if not torch.compiler.is_compiling() and t.layout != torch.strided:
        raise TypeError(f"{op}: {name} must be a dense (strided) tensor, got layout {t.layout}")


def _check_like_mu(t, name, mu, op):
    _check_dense(t, name, op)
    if t.dtype != mu.dtype:
        raise TypeError(f"{op}: {name} must have mu's dtype {mu.dtype}, got {t.dtype}")
    if t.device != mu.device:
        raise ValueError(f"{op}: {name} must be on mu's device {mu.device}, got {t.device}")
    if t.shape != mu.shape:
        raise ValueError(f"{op}: {name} must have mu's shape {tuple(mu.shape)}, got {tuple(t.shape)}")


def check_prior(p, name, mu, op):
    """Raises unless ``p`` is a scalar, per-latent (mu.shape[1:]) or full-shaped prior."""
    if p.dtype != mu.dtype:
        raise TypeError(f"{op}: {name} must have mu's dtype {mu.dtype}, got {p.dtype}")
    if p.device != mu.device:
        raise ValueError(f"{op}: {name} must be on mu's device {mu.device}, got {p.device}")
    latent = mu.shape[1:]
    ok = (
        p.shape == mu.shape
        or p.shape == latent
        or (p.dim() == mu.dim() and p.shape[0] == 1 and p.shape[1:] == latent)
        or (p.numel() == 1 and p.dim() <= mu.dim())
    )
    if not ok:
        raise ValueError(
            f"{op}: {name} must be a scalar, of shape mu.shape[1:] = {tuple(latent)}, "
            f"or of shape mu.shape = {tuple(mu.shape)}; got {tuple(p.shape)}"
        )


def check_inputs(op, mu, logvar, eps=None, seed=None, prior_mu=None, prior_logvar=None, needs_sample=False):
    """The argument checks of csrc/op_front.h and csrc/op_args.h, with the same messages.

    ``needs_sample``: the op builds z or its gradient, so exactly one of eps and seed must be
    given; eps and seed together are rejected always (either could rebuild z: ambiguous)."""
    if not isinstance(mu, torch.Tensor) or mu.dtype not in FLOAT_DTYPES:
        dtype = mu.dtype if isinstance(mu, torch.Tensor) else type(mu).__name__
        raise TypeError(
            f"{op}: mu must be a floating-point tensor (float64, float32, float16 or bfloat16), got {dtype}"
        )
    _check_dense(mu, "mu", op)
    if mu.dim() < 1:
        raise ValueError(f"{op}: mu must have a batch dimension (dim >= 1), got a 0-d tensor")
    _check_like_mu(logvar, "logvar", mu, op)
    if eps is not None and seed is not None:
        raise ValueError(f"{op}: eps and seed are both given; pass one of them, not both")
    if needs_sample and eps is None and seed is None:
        raise ValueError(
            f"{op}: pass exactly one of eps and seed (the noise of the sample, or the seed that regenerates it)"
        )
    if eps is not None:
        _check_like_mu(eps, "eps", mu, op)
    if seed is not None:
        if seed.dtype != torch.int64:
            raise TypeError(f"{op}: seed must be an int64 tensor, got {seed.dtype}")
        if seed.numel() != 1:
            raise ValueError(f"{op}: seed must hold one element, got shape {tuple(seed.shape)}")
        if seed.device != mu.device:
            raise ValueError(f"{op}: seed must be on mu's device {mu.device}, got {seed.device}")
    if prior_mu is not None:
        check_prior(prior_mu, "prior_mu", mu, op)
    if prior_logvar is not None:
        check_prior(prior_logvar, "prior_logvar", mu, op)


# --------------------------------------------------------------------------- sampler


def _mulhilo32(a: int, b: torch.Tensor):
    """High and low 32-bit words of a * b for a 32-bit constant a and int64 b in [0, 2^32)."""
    p_lo = b * (a & 0xFFFF)  # < 2^48: no int64 overflow
    p_hi = b * (a >> 16)
    t = p_lo + ((p_hi & 0xFFFF) << 16)
    return (p_hi >> 16) + (t >> 32), t & _MASK32


def philox4x32_10(counter, key):
    """Philox4x32-10 of four int64 tensors holding 32-bit words, under key (k0, k1)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo32(_PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo32(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _PHILOX_W[0]) & _MASK32
        k1 = (k1 + _PHILOX_W[1]) & _MASK32
    return c0, c1, c2, c3


def philox_key(seed):
    """The two 32-bit key words of a 64-bit seed: Python ints for an int, int64 tensors for a
    tensor (no host read: traceable by torch.compile and batched by vmap)."""
    if isinstance(seed, torch.Tensor):
        s = seed.reshape(())
        return s & _MASK32, (s >> 32) & _MASK32
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    return s & _MASK32, s >> 32


def uniform_open01(x: torch.Tensor) -> torch.Tensor:
    return (x >> 9).to(torch.float32) * 2.0**-23 + 2.0**-24


def log_positive(x: torch.Tensor) -> torch.Tensor:
    # x = m 2^e with m in [1, 2), as the kernels read it off the float's bits; frexp instead of
    # a bit view so that vmap can batch it on every supported torch.
    fraction, exponent = torch.frexp(x)
    e = (exponent - 1).to(torch.float32)
    m = fraction * 2.0
    high = m > 1.41421356
    m = torch.where(high, m * 0.5, m)
    e = torch.where(high, e + 1.0, e)
    f = m - 1.0
    f2 = f * f
    p = torch.full_like(f, 7.0376836292e-2)
    for c in (
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    ):
        p = p * f + c
    y = f * f2 * p
    y = y + e * -2.12194440e-4
    y = y + f2 * -0.5
    return (f + y) + e * 0.693359375


def sincos_2pi(u: torch.Tensor):
    t = u * 4.0
    q = (t + 0.5).to(torch.int32)
    r = t - q.to(torch.float32)
    a = r * 1.57079632679489662
    a2 = a * a
    ps = (torch.full_like(a2, -1.9515295891e-4) * a2 + 8.3321608736e-3) * a2 + -1.6666654611e-1
    sin_a = a + a * a2 * ps
    pc = (torch.full_like(a2, 2.443315711809948e-5) * a2 + -1.388731625493765e-3) * a2 + 4.166664568298827e-2
    cos_a = (1.0 + a2 * -0.5) + a2 * a2 * pc
    quadrant = q & 3
    odd = (quadrant & 1).bool()
    sin_abs = torch.where(odd, cos_a, sin_a)
    cos_abs = torch.where(odd, sin_a, cos_a)
    s = torch.where((quadrant & 2).bool(), -sin_abs, sin_abs)
    c = torch.where(((quadrant + 1) & 2).bool(), -cos_abs, cos_abs)
    return s, c


def _box_muller(x_radius, x_angle):
    # torch's float32 sqrt is not always correctly rounded; sqrt in float64 rounded to
    # float32 is, and so is the kernels' sqrtf.
    radius = torch.sqrt((-2.0 * log_positive(uniform_open01(x_radius))).double()).float()
    s, c = sincos_2pi(uniform_open01(x_angle))
    return radius * c, radius * s


def normals(seed, n: int, device=None, start: int = 0) -> torch.Tensor:
    """The float32 standard normals of flat indices [start, start + n) for ``seed`` (an int or
    an int64 tensor)."""
    first, last = start // 4, (start + n + 3) // 4
    block = torch.arange(first, last, dtype=torch.int64, device=device)
    zero = torch.zeros_like(block)
    x0, x1, x2, x3 = philox4x32_10((block & _MASK32, block >> 32, zero, zero), philox_key(seed))
    n0, n1 = _box_muller(x0, x1)
    n2, n3 = _box_muller(x2, x3)
    flat = torch.stack((n0, n1, n2, n3), dim=1).reshape(-1)
    return flat[start - 4 * first : start - 4 * first + n]


def sample_eps(seed: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ε for a tensor shaped like ``like`` (docs/design.md section 4), in like's compute dtype
    (float32 for half types, as the kernels use it; float64 for float64)."""
    eps = normals(seed, like.numel(), device=like.device)
    return eps.reshape(like.shape).to(to_compute(like).dtype)


# --------------------------------------------------------------------------- math


def _rows(t, mu):
    return t.reshape(mu.shape[0], math.prod(mu.shape[1:]))


def _prior_or_zero(p, like):
    return like.new_zeros(()) if p is None else to_compute(p)


# exp and expm1 of csrc/vae_math.h step for step, in float32 or float64 tensor ops (each op
# rounds once, as the kernels' do), so the KL terms are the kernels' to the bit. The
# constants are the header's: a Python float rounds to the tensor's dtype as the C++
# literal does. Differentiable (losses.py takes gradients of the KL terms).
_EXP_FLOAT = {
    "clamp": (-104.0, 89.0),
    "shift": 12582912.0,
    "ln2": (0.693359375, -2.12194440e-4),
    "poly": (1.98412698e-4, 1.38888889e-3, 8.33333333e-3, 4.16666667e-2, 1.66666667e-1, 0.5),
    "bias": 127,
    "mantissa": 23,
    "exponent_bits": 7,  # |n_lo| <= 75 for x in the clamp range
    "int": torch.int32,
}
_EXP_DOUBLE = {
    "clamp": (-746.0, 710.0),
    "shift": 6755399441055744.0,
    "ln2": (6.93147180369123816490e-01, 1.90821492927058770002e-10),
    "poly": (
        1.6059043836821614599e-10,
        2.0876756987868098979e-9,
        2.5052108385441718775e-8,
        2.7557319223985890653e-7,
        2.7557319223985890653e-6,
        2.4801587301587301587e-5,
        1.9841269841269841270e-4,
        1.3888888888888888889e-3,
        8.3333333333333333333e-3,
        4.1666666666666666667e-2,
        1.6666666666666666667e-1,
        0.5,
    ),
    "bias": 1023,
    "mantissa": 52,
    "exponent_bits": 10,  # |n_lo| <= 538
    "int": torch.int64,
}
_EXPM1_MINUS_X = {
    torch.float32: (2.48015873e-5, 1.98412698e-4, 1.38888889e-3, 8.33333333e-3, 4.16666667e-2, 1.66666667e-1, 0.5),
    torch.float64: (
        2.08767569878680990e-9,
        2.50521083854417188e-8,
        2.75573192239858907e-7,
        2.75573192239858907e-6,
        2.48015873015873016e-5,
        1.98412698412698413e-4,
        1.38888888888888889e-3,
        8.33333333333333333e-3,
        4.16666666666666667e-2,
        1.66666666666666667e-1,
        0.5,
    ),
}


def _view_dtype_batches():
    """Whether vmap batches Tensor.view(dtype) (torch 2.11's does not)."""
    try:
        torch.func.vmap(lambda t: t.view(torch.float32))(torch.zeros(2, 1, dtype=torch.int32))
    except RuntimeError:
        return False
    return True


_VIEW_DTYPE_BATCHES = _view_dtype_batches()


def _power_of_two(n, dtype, bits):
    """2^n for an integer tensor n with |n| < 2^bits, exactly: a product of exact powers of two
    (one per set bit of |n|), inverted for n < 0; normal numbers throughout for the n here."""
    magnitude = n.abs()
    result = torch.ones(n.shape, dtype=dtype, device=n.device)
    for bit in range(bits):
        result = torch.where(((magnitude >> bit) & 1) == 1, result * 2.0 ** (1 << bit), result)
    return torch.where(n < 0, 1.0 / result, result)


def _exp_parts(x):
    """(expm1(r), 2^n as two factors, n) of x = n ln2 + r: vae_math.h exp_parts."""
    k = _EXP_FLOAT if x.dtype == torch.float32 else _EXP_DOUBLE
    lo, hi = k["clamp"]
    c = torch.where(x > lo, x, lo)
    c = torch.where(c < hi, c, hi)
    # n is piecewise constant in x: detached, autograd differentiates the polynomial in r.
    n = ((c * 1.4426950408889634 + k["shift"]) - k["shift"]).detach()
    ln2_hi, ln2_lo = k["ln2"]  # ln 2 = ln2_hi + ln2_lo, n * ln2_hi exact
    r = (c - n * ln2_hi) - n * ln2_lo
    coefficients = k["poly"]
    p = torch.full_like(r, coefficients[0])
    for coefficient in coefficients[1:]:
        p = p * r + coefficient
    ni = n.to(torch.int32).to(k["int"])
    n_lo = ni >> 1
    # 2^n_lo and 2^(n - n_lo) (n - n_lo is n_lo or n_lo + 1), as the kernels build them: a
    # bit cast of the exponent field; where vmap cannot batch a dtype view (torch 2.11), the
    # same floats from exact products.
    if _VIEW_DTYPE_BATCHES:
        scale_lo = ((n_lo + k["bias"]) << k["mantissa"]).view(x.dtype)
    else:
        scale_lo = _power_of_two(n_lo, x.dtype, k["exponent_bits"])
    scale_hi = torch.where((ni & 1) == 1, scale_lo * 2.0, scale_lo)
    return r + (r * r) * p, scale_lo, scale_hi, n


def _exp_scaled(em1_r, scale_lo, scale_hi):
    return ((1.0 + em1_r) * scale_lo) * scale_hi


def _nan_or(x, value):
    return torch.where(torch.isnan(x), x, value)


def exp_of(x):
    """e^x as the kernels compute it (float32 or float64)."""
    em1_r, scale_lo, scale_hi, _ = _exp_parts(x)
    return _nan_or(x, _exp_scaled(em1_r, scale_lo, scale_hi))


def half_exp(x):
    """(e^(x/2), expm1(x)) from one evaluation, as the kernels compute them."""
    em1_r, scale_lo, scale_hi, n = _exp_parts(0.5 * x)
    exp_half = _exp_scaled(em1_r, scale_lo, scale_hi)
    em1_half = torch.where(n == 0, em1_r, exp_half - 1.0)
    return _nan_or(x, exp_half), _nan_or(x, em1_half * (em1_half + 2.0))


def expm1_minus_x(x, em1=None):
    """expm1(x) - x without the cancellation at small |x| (Taylor series there), as the kernels."""
    if em1 is None:
        em1 = half_exp(x)[1]
    coefficients = _EXPM1_MINUS_X[x.dtype]
    p = torch.full_like(x, coefficients[0])
    for coefficient in coefficients[1:]:
        p = p * x + coefficient
    small = (x < 0.25) & (x > -0.25)
    return torch.where(small, (x * x) * p, em1 - x)


def kl_elementwise(mu, logvar, prior_mu=None, prior_logvar=None):
    """Per-element KL in the compute dtype, vae_math.h kl_standard / kl_general to the bit."""
    m, lv = to_compute(mu), to_compute(logvar)
    if prior_mu is None and prior_logvar is None:
        return 0.5 * (m * m + expm1_minus_x(lv))
    pm, plv = _prior_or_zero(prior_mu, m), _prior_or_zero(prior_logvar, m)
    d, dlv = m - pm, lv - plv
    return 0.5 * ((d * d) * exp_of(-plv) + expm1_minus_x(dlv))


_SUM_LANES, _SUM_LEAF_ROWS = 16, 8
_SUM_LEAF = _SUM_LANES * _SUM_LEAF_ROWS


def _pairwise_halves(x, dim):
    """(even, odd) elements along ``dim`` (even length): one level of a pairwise tree."""
    return x.unflatten(dim, (-1, 2)).unbind(dim + 1)


def row_sum(terms):
    """Sum over dim 1 of [B, n] KL terms in the order of csrc/row_sum.h, with explicit adds."""
    rows, n = terms.shape
    if n == 0:
        return terms.new_zeros(rows)
    leaves = -(-n // _SUM_LEAF)
    x = torch.nn.functional.pad(terms, (0, leaves * _SUM_LEAF - n))
    x = x.reshape(rows, leaves, _SUM_LEAF_ROWS, _SUM_LANES)
    while x.shape[2] > 1:  # the leaf's rows, lane by lane
        even, odd = _pairwise_halves(x, 2)
        x = even + odd
    x = x.reshape(rows, leaves, _SUM_LANES)
    while x.shape[2] > 1:  # its 16 lanes
        even, odd = _pairwise_halves(x, 2)
        x = even + odd
    x = x.reshape(rows, leaves)
    width = 1 << (leaves - 1).bit_length()
    x = torch.nn.functional.pad(x, (0, width - leaves))
    while x.shape[1] > 1:  # the leaves
        even, odd = _pairwise_halves(x, 1)
        x = even + odd
    return x.reshape(rows)


# --------------------------------------------------------------------------- ops


def _reparameterize(mu, logvar, eps_compute):
    z = to_compute(mu) + eps_compute * torch.exp(0.5 * to_compute(logvar))
    # Not `z.to(mu.dtype)` nor a helper that returns z as is: torch 2.11's compile gives an
    # autograd.Function whose forward ends in such an identity zero gradients.
    return z if z.dtype == mu.dtype else z.to(mu.dtype)


def reparameterize(mu, logvar, eps):
    check_inputs("reparameterize", mu, logvar, eps=eps)
    return _reparameterize(mu, logvar, to_compute(eps))


def reparameterize_sampled(mu, logvar, seed):
    check_inputs("reparameterize_sampled", mu, logvar, seed=seed)
    return _reparameterize(mu, logvar, sample_eps(seed, mu))


def gaussian_kl(mu, logvar, prior_mu=None, prior_logvar=None):
    check_inputs("gaussian_kl", mu, logvar, prior_mu=prior_mu, prior_logvar=prior_logvar)
    kl = kl_elementwise(mu, logvar, prior_mu, prior_logvar)
    return row_sum(_rows(kl.expand(mu.shape), mu))


def reparameterize_kl(mu, logvar, eps=None, seed=None, prior_mu=None, prior_logvar=None):
    check_inputs("reparameterize_kl", mu, logvar, eps, seed, prior_mu, prior_logvar, needs_sample=True)
    z = reparameterize(mu, logvar, eps) if eps is not None else reparameterize_sampled(mu, logvar, seed)
    return z, gaussian_kl(mu, logvar, prior_mu, prior_logvar)


def reparameterize_backward(grad_z, logvar, eps=None, seed=None):
    check_inputs("reparameterize_backward", logvar, logvar, eps=eps, seed=seed, needs_sample=True)
    _check_like_mu(grad_z, "grad_z", logvar, "reparameterize_backward")
    e = to_compute(eps) if eps is not None else sample_eps(seed, logvar)
    lv = to_compute(logvar)
    g = to_compute(grad_z) * (0.5 * e * torch.exp(0.5 * lv))
    return g if g.dtype == logvar.dtype else g.to(logvar.dtype)


def reparameterize_kl_backward(
    grad_z, grad_kl, mu, logvar, eps=None, seed=None, prior_mu=None, prior_logvar=None, prior_grads=False
):
    op = "reparameterize_kl_backward"
    check_inputs(op, mu, logvar, eps, seed, prior_mu, prior_logvar, needs_sample=grad_z is not None)
    m, lv = to_compute(mu), to_compute(logvar)
    g_mu = torch.zeros_like(m)
    g_lv = torch.zeros_like(m)
    g_plv = torch.zeros_like(m)
    if grad_z is not None:
        _check_like_mu(grad_z, "grad_z", mu, op)
        gz = to_compute(grad_z)
        e = to_compute(eps) if eps is not None else sample_eps(seed, mu)
        g_mu = g_mu + gz
        g_lv = g_lv + gz * (0.5 * e * torch.exp(0.5 * lv))
    if grad_kl is not None:
        if grad_kl.shape != (mu.shape[0],):
            raise ValueError(f"{op}: grad_kl must have shape [{mu.shape[0]}], got {tuple(grad_kl.shape)}")
        g = grad_kl.to(m.dtype).reshape((-1,) + (1,) * (mu.dim() - 1))
        pm, plv = _prior_or_zero(prior_mu, m), _prior_or_zero(prior_logvar, m)
        d = m - pm
        inv_var_p = torch.exp(-plv)
        em1 = torch.expm1(lv - plv)
        k_mu = g * d * inv_var_p
        g_mu = g_mu + k_mu
        g_lv = g_lv + g * 0.5 * em1
        g_plv = -g * 0.5 * (em1 + d * d * inv_var_p)
    else:
        k_mu = torch.zeros_like(m)
    if prior_grads:
        g_pmu, g_plv = (-k_mu).expand(mu.shape), g_plv.expand(mu.shape)
    else:
        g_pmu, g_plv = mu.new_empty((0,)), mu.new_empty((0,))
    return tuple(t.to(mu.dtype).contiguous() for t in (g_mu, g_lv, g_pmu, g_plv))
