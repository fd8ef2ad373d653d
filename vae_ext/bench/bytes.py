"""The byte model: how many N-sized tensors one call reads and writes (docs/design.md section 6).

GB/s = model bytes / median time, with the same count for every impl of an op, so GB/s
compares like with like (eager really moves several times these bytes).
"""

from __future__ import annotations

from .suites import OPS

COPY_PASSES = {"fwd": 2}  # y.copy_(x): read x, write y


def passes_table() -> dict[str, dict[str, int]]:
    """op -> {"fwd": n, "bwd": n}, and "copy" -> {"fwd": 2}: the result file's "bytes_model"."""
    return {**{name: dict(op.tensor_passes) for name, op in OPS.items()}, "copy": dict(COPY_PASSES)}


def tensor_passes(op: str, pass_name: str, eps: str) -> int:
    """How many N-sized tensors one call reads or writes (the copy row uses op "copy");
    a given ε adds one read per pass."""
    counts = COPY_PASSES if op == "copy" else OPS[op].tensor_passes
    extra = 1 if eps == "given" else 0
    return sum(counts[part] + extra for part in pass_name.split("+"))


def model_bytes(op: str, pass_name: str, eps: str, numel: int, itemsize: int) -> int:
    return tensor_passes(op, pass_name, eps) * numel * itemsize
