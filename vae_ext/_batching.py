"""Batching rules (``torch.vmap``) of the compiled ops.

Every op works on rows: ``[B, ...]`` latents, a per-sample KL of shape ``[B]``. Under vmap
over V, a call without a seed runs once on V·B rows: batched latents are moved to the front
and flattened, unbatched ones expanded, priors turned into full ``[V·B, ...]`` priors where
they differ per vmapped element. A call with a seed runs once per vmapped element, so that
``vmap(op)`` equals ``map(op)`` exactly: a batched seed (``randomness="different"``) gives
each element its own ε stream, an unbatched one (``"same"``) the same ε for every element.
"""

from __future__ import annotations

import torch

# Positional roles of each op's arguments: "x" latent-shaped [B, ...], "kl" per-sample [B],
# "prior" scalar / per-latent / full, "seed", "flag" a non-tensor.
_ROLES = {
    "reparameterize": ("x", "x", "x"),
    "reparameterize_sampled": ("x", "x", "seed"),
    "reparameterize_backward": ("x", "x", "x", "seed"),
    "gaussian_kl": ("x", "x", "prior", "prior"),
    "reparameterize_kl": ("x", "x", "x", "seed", "prior", "prior"),
    "reparameterize_kl_backward": ("x", "kl", "x", "x", "x", "seed", "prior", "prior", "flag"),
}


_OUTPUTS = {
    "reparameterize": ("x",),
    "reparameterize_sampled": ("x",),
    "reparameterize_backward": ("x",),
    "gaussian_kl": ("kl",),
    "reparameterize_kl": ("x", "kl"),
    "reparameterize_kl_backward": ("x", "x", "prior_grad", "prior_grad"),
}


def _front(t, dim):
    return t if dim is None else t.movedim(dim, 0)


def _out_dims(name, args):
    # The prior gradients are shape-[0] placeholders, the same for every element, unless asked for.
    wanted = args[-1] if name == "reparameterize_kl_backward" else True
    return tuple(None if r == "prior_grad" and not wanted else 0 for r in _OUTPUTS[name])


def _map(op, name, size, in_dims, args):
    """One call per vmapped element, outputs stacked on dim 0."""
    if size == 0:
        raise ValueError(f"vmap of vae_ext::{name} with a seed needs a non-empty vmapped dimension")
    results = []
    for v in range(size):
        call = [a if d is None else a.select(d, v) for a, d in zip(args, in_dims)]
        out = op(*call)
        results.append(out if isinstance(out, tuple) else (out,))
    dims = _out_dims(name, args)
    outs = tuple(column[0] if d is None else torch.stack(column) for column, d in zip(zip(*results), dims))
    return (outs[0], dims[0]) if len(outs) == 1 else (outs, dims)


def _sample_shape(args, in_dims, roles):
    """The per-element shape [B, ...] of the latent arguments."""
    latents = [(a, d) for a, d, r in zip(args, in_dims, roles) if r == "x" and a is not None]
    a, d = next(((a, d) for a, d in latents if d is not None), latents[0])
    return a.shape if d is None else _front(a, d).shape[1:]


def _flatten(op, name, size, in_dims, args, roles):
    """One call on V·B rows (no seed among the arguments)."""
    shape = _sample_shape(args, in_dims, roles)
    rows = size * shape[0]
    call = []
    for a, d, r in zip(args, in_dims, roles):
        if a is None or r == "flag":
            call.append(a)
        elif r in ("x", "kl"):
            own = shape if r == "x" else shape[:1]
            t = _front(a, d) if d is not None else a.expand(size, *own)
            call.append(t.reshape(rows, *own[1:]))
        elif d is None and not (a.dim() > 0 and a.shape == shape):
            call.append(a)  # an unbatched scalar or per-latent prior broadcasts over all rows
        else:  # a full prior, or one that differs per element: a full prior of the V·B rows
            p = _front(a, d) if d is not None else a.unsqueeze(0)
            p = p.reshape(p.shape[0], *([1] * (len(shape) + 1 - p.dim())), *p.shape[1:])
            call.append(p.expand(size, *shape).reshape(rows, *shape[1:]))
    out = op(*call)
    out = out if isinstance(out, tuple) else (out,)
    dims = _out_dims(name, args)
    outs = tuple(
        t if d is None else t.reshape(size, *(shape if r != "kl" else shape[:1]))
        for t, d, r in zip(out, dims, _OUTPUTS[name])
    )
    return (outs[0], dims[0]) if len(outs) == 1 else (outs, dims)


def _rule(name):
    roles = _ROLES[name]
    op = getattr(torch.ops.vae_ext, name).default

    def rule(info, in_dims, *args):
        seed_at = roles.index("seed") if "seed" in roles else None
        if seed_at is not None and args[seed_at] is not None:
            return _map(op, name, info.batch_size, in_dims, args)
        return _flatten(op, name, info.batch_size, in_dims, args, roles)

    return rule


def register():
    for name in _ROLES:
        torch.library.register_vmap(f"vae_ext::{name}", _rule(name))
