"""The argument conventions of every public entry point, each written once.

* ``check_tensor``: a dense tensor of an accepted dtype, else TypeError naming the argument.
* ``explain``: the error path of a call into the ops. The kernels check dtypes, shapes and
  devices and raise TypeError / ValueError themselves; what they cannot name (a list where a
  tensor goes, a sparse layout, a dtype with no kernel) ends in an AttributeError, a dispatcher
  RuntimeError or a NotImplementedError, which ``explain`` turns into the TypeError naming the
  argument. A RuntimeError whose message starts with ``TypeError:`` or ``ValueError:`` (how a
  check reports its type where only std::runtime_error exists, as in torch's stable ABI)
  becomes that type. It runs only when a call has failed.
* ``as_prior``: the one scalar-to-tensor prior conversion.
* ``generator_device``: where a seed from a user's generator is drawn.
"""

from __future__ import annotations

import torch

from ._numerics import FLOAT_DTYPES

FLOAT_NAMES = "float64, float32, float16 or bfloat16"
_TYPED_PREFIXES = {"TypeError:": TypeError, "ValueError:": ValueError}


def check_tensor(t, name: str, dtypes=FLOAT_DTYPES, what: str = f"a floating-point tensor ({FLOAT_NAMES})"):
    """t itself when it is a dense tensor with a dtype in ``dtypes`` (None: any); else TypeError."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name} must be {what}, got {t.dtype}")
    return t


def explain(error: Exception, mu, logvar, **optional) -> None:
    """Raises the TypeError / ValueError that ``error`` stands for, naming the argument, or
    returns (the caller re-raises ``error`` as it is). ``optional``: name -> value of the
    call's other tensor arguments (None when absent; priors after ``as_prior``)."""
    for name, value in {"mu": mu, "logvar": logvar, **optional}.items():
        if value is not None or name in ("mu", "logvar"):
            check_tensor(value, name)  # raises inside the caller's except block: chained to error
    if isinstance(error, RuntimeError):
        message = str(error)
        for prefix, kind in _TYPED_PREFIXES.items():
            if message.startswith(prefix):
                raise kind(message[len(prefix) :].lstrip()) from None


def as_prior(p, mu: torch.Tensor, name: str):
    """A prior argument as the ops take it: None for the standard value 0 (the fused standard
    path), else a tensor in mu's dtype. A float or a 0-d tensor may sit on any device (a CPU
    0-d tensor is what ``Normal(0.0, 1.0)`` holds): it moves to mu's, differentiably, so a
    learnable CPU prior gets its gradient back on the CPU."""
    if p is None:
        return None
    if isinstance(p, torch.Tensor):
        check_tensor(p, name)
        if p.dtype != mu.dtype or (p.dim() == 0 and p.device != mu.device):
            return p.to(device=mu.device if p.dim() == 0 else p.device, dtype=mu.dtype)
        return p
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        return None if p == 0 else torch.full((), float(p), dtype=mu.dtype, device=mu.device)
    raise TypeError(f"{name} must be None, a float or a floating-point tensor, got {type(p).__name__}")


def generator_device(generator, device) -> torch.device | None:
    """The device to draw on for ``device``'s tensors: the generator's own when it lives
    elsewhere (diffusers hands a CPU generator to CUDA latents), else None (draw on device)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    target = torch.device(device)
    own = generator.device
    if own.type == target.type and (target.index is None or own.index in (None, target.index)):
        return None
    return own
