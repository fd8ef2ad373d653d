"""What one (model, latent layer, eager or compiled) training step costs: time, saved bytes, peak memory.

One step = ``zero_grad``, the loss (forward), ``backward``, ``Adam.step``. Every implementation
of a model case shares the model, its batch and the optimizer, and they take turns: round r
runs each of them for a few steps in an order rotated by r, so load from other processes falls
on all of them alike, and the per-round ratios between two of them measure the noise.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import torch

from ..timing import CLOCKS

# The options of every torch.compile in the suite (eager latent, vae_ext and free alike).
COMPILE_OPTIONS = {"dynamic": False}


@dataclass
class Impl:
    mode: str  # "eager" or "compile"
    latent: str  # a key of latents.LATENTS
    loss: object  # x -> scalar loss
    first_step_s: float = 0.0  # the first step (compiling, for "compile")
    rounds: list = field(default_factory=list)  # per round, the step times in seconds
    saved_bytes: int | None = None
    peak_bytes: int | None = None
    error: str | None = None

    @property
    def key(self) -> tuple:
        return (self.mode, self.latent)


def loss_function(model, layer, mode):
    loss = functools.partial(model.loss, latent=layer)
    return torch.compile(loss, **COMPILE_OPTIONS) if mode == "compile" else loss


def synchronizer(device):
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def make_step(loss, x, optimizer):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss(x).backward()
        optimizer.step()

    return step


def timed(step, sync, clock=time.perf_counter) -> float:
    sync()
    start = clock()
    step()
    sync()
    return clock() - start


def saved_bytes(loss, x, exclude) -> int:
    """Bytes of the distinct storages autograd keeps for one step's backward, leaving out the
    storages in ``exclude`` (parameters and the batch: alive with or without the step)."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude and storage.nbytes():
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = loss(x)
    del value
    return sum(storages.values())


def peak_bytes(step, device) -> int | None:
    """CUDA: the most memory one step allocates above what was allocated before it; None elsewhere."""
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def measure_case(model, x, impls, device, rounds, steps_per_round, warmup, clock="wall"):
    """Fills in every Impl's times, saved and peak bytes; an Impl that fails records its error."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    sync = synchronizer(device)
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()} | {x.untyped_storage().data_ptr()}
    steps = {}
    for impl in impls:
        step = make_step(impl.loss, x, optimizer)
        try:
            impl.first_step_s = timed(step, sync)
            for _ in range(warmup):
                step()
            impl.saved_bytes = saved_bytes(impl.loss, x, exclude)
            impl.peak_bytes = peak_bytes(step, device)
        except Exception as error:  # noqa: BLE001  a failing impl (typically torch.compile) is recorded
            impl.error = f"{type(error).__name__}: {error}"[:2000]
            continue
        steps[impl.key] = step
    live = [impl for impl in impls if impl.key in steps]
    for r in range(rounds):
        shift = r % len(live) if live else 0
        for impl in live[shift:] + live[:shift]:
            impl.rounds.append([timed(steps[impl.key], sync, CLOCKS[clock]) for _ in range(steps_per_round)])
    optimizer.zero_grad(set_to_none=True)
