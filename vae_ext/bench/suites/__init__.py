"""The registry of benchmarked ops, grouped in suites (a module per suite in this folder).

A suite module registers its ops with ``register(BenchOp(...))`` and is imported at the end of
this file; ``python -m vae_ext bench --ops NAME,...`` then accepts its op names, and
``--ops SUITE`` (e.g. ``--ops latent``) or ``--ops all`` selects whole suites. Every op is timed
against the same harness: eager PyTorch, ``torch.compile`` of the eager function, the vae_ext
function, the device copy and the op's traffic as fresh-output elementwise ops, in the same
run, with GB/s from its byte model.

To add a suite (for example a posterior benchmark): write ``suites/<name>.py`` defining the
eager and vae_ext functions, each ``fn(mu, logvar, eps_or_None) -> tuple of outputs``, register
them, and import the module below. Inputs are the harness's fixed random ``mu``, ``logvar``
(scaled by 0.5) and ``eps`` of the case's shape and dtype (cases.make_inputs); an output named
"z" receives a gradient shaped like mu in the backward pass, any other output a [B] gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

OpFunction = Callable[..., tuple]


@dataclass(frozen=True)
class BenchOp:
    name: str
    suite: str
    outputs: tuple[str, ...]
    eager: OpFunction
    vae_ext: OpFunction
    # N-sized tensors one call reads + writes with ε sampled in the kernel (a given ε adds one
    # read per pass); [B]-sized tensors are not counted. Keys "fwd" and "bwd".
    tensor_passes: dict[str, int]
    # True: timed with ε "sampled" and "given"; False: the op draws no noise (eps mode "none").
    uses_eps: bool = True
    # The same traffic per pass as (N-sized inputs read, N-sized outputs written), inputs named
    # as cases.Inputs' fields; a given ε adds the read "eps". The "fresh" impl times it as
    # elementwise ops that allocate their outputs (cases.build_fresh_step). None: no fresh rows.
    traffic: dict | None = None


OPS: dict[str, BenchOp] = {}


def register(op: BenchOp) -> BenchOp:
    if op.name in OPS or op.name in ("copy", "all"):
        raise ValueError(f"bench op {op.name!r} is registered twice or uses a reserved name")
    if set(op.tensor_passes) != {"fwd", "bwd"}:
        raise ValueError(f"bench op {op.name!r}: tensor_passes needs the keys 'fwd' and 'bwd'")
    for pass_name, (reads, writes) in (op.traffic or {}).items():
        if len(reads) + writes != op.tensor_passes[pass_name] or writes > len(reads):
            raise ValueError(f"bench op {op.name!r}: traffic[{pass_name!r}] does not match tensor_passes")
    OPS[op.name] = op
    return op


def suites() -> dict[str, tuple[str, ...]]:
    """Suite name -> its op names, in registration order."""
    out: dict[str, tuple[str, ...]] = {}
    for op in OPS.values():
        out[op.suite] = (*out.get(op.suite, ()), op.name)
    return out


from . import latent  # noqa: E402,F401  (registers the suite's ops)
