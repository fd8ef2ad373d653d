"""``python -m vae_ext bench``: eager PyTorch vs torch.compile vs vae_ext vs a plain copy.

Every row is timed in the same run: the op written in eager PyTorch, ``torch.compile`` of that
eager function, the vae_ext op, and ``y.copy_(x)`` on as many elements. GB/s comes from model
bytes (N-sized tensors read + written, see bytes.py) over the median time. The spec is
docs/design.md section 6; benchmarks/README.md describes the options and the result files.

Files: suites/ (the registry of benchmarked ops, a module per suite), cases (sizes, inputs, the
timed call), bytes (byte model), compiled (the torch.compile impl), timing, rows, runner,
report (result document), tables, plot, cli.
"""

from __future__ import annotations

from .bytes import model_bytes, passes_table, tensor_passes
from .cli import DESCRIPTION, build_parser, main
from .report import cpu_model, make_report, save_path
from .rows import add_derived_fields
from .suites import OPS, BenchOp, register, suites

__all__ = [
    "DESCRIPTION",
    "OPS",
    "BenchOp",
    "add_derived_fields",
    "build_parser",
    "cpu_model",
    "main",
    "make_report",
    "model_bytes",
    "passes_table",
    "register",
    "save_path",
    "suites",
    "tensor_passes",
]
