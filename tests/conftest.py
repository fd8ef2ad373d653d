"""Fixtures and hooks of the vae_ext test suite; the shared helpers are in tests/helpers.py."""

from __future__ import annotations

import pytest
import torch
from helpers import BACKEND_PARAMS, DEVICE_PARAMS, DTYPES, KERNEL_PARAMS, dtype_id, make_backend

from vae_ext import _ops

BACKEND_FIXTURES = ("backend", "api_backend", "kernels")


def pytest_generate_tests(metafunc):
    """Parametrizes `backend` / `api_backend` over the op sets (and CUDA too in modules that
    build their inputs on `backend.device`: module-level ON_EVERY_DEVICE = True), and `kernels`
    over the compiled kernels of each device."""
    every_device = getattr(metafunc.module, "ON_EVERY_DEVICE", False)
    for name in BACKEND_FIXTURES:
        if name in metafunc.fixturenames:
            params = KERNEL_PARAMS if name == "kernels" else DEVICE_PARAMS if every_device else BACKEND_PARAMS
            metafunc.parametrize(name, params, indirect=True)


@pytest.fixture
def backend(request):
    """A Backend (tests/helpers.py): an op set (``_ops.compiled`` or ``_ops.fallback``) and a device."""
    return make_backend(request.param)


@pytest.fixture
def kernels(request):
    """A Backend of the compiled kernels: ``torch.ops.vae_ext`` on the CPU or on CUDA."""
    return make_backend(request.param)


@pytest.fixture
def api_backend(request, monkeypatch):
    """A Backend whose op set the functional API (``vae_ext.reparameterize`` ...) is routed through."""
    chosen = make_backend(request.param)
    monkeypatch.setattr(_ops, "ops", chosen.ops)
    return chosen


@pytest.fixture(params=DTYPES, ids=dtype_id)
def dtype(request):
    return request.param


@pytest.fixture
def fresh_dynamo():
    """A torch._dynamo cache emptied before and after the test (no compiled graph leaks across)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
