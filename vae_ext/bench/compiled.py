"""The "compile" impl: torch.compile of the eager functions."""

from __future__ import annotations

import torch

from .suites import OPS


class CompiledFunctions:
    """torch.compile of the eager functions, one per (op, eps mode, training or inference)."""

    def __init__(self):
        self._functions = {}

    def get(self, op: str, eps: str, training: bool):
        key = (op, eps, training)
        if key not in self._functions:
            self._functions[key] = torch.compile(OPS[op].eager, dynamic=False)
        return self._functions[key]


def raised_recompile_limit():
    """Every (dtype, shape, eps, grad mode) is its own graph of the same code object: allow them all."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{name: max(getattr(config, name), 256)})
