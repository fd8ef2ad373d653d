"""The run: every selected model case, each latent layer eager and compiled, in one process."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

from ..compiled import raised_recompile_limit
from ..report import load_average
from .latents import LATENTS, latent_layers
from .measure import COMPILE_OPTIONS, Impl, loss_function, measure_case
from .models import MODELS
from .results import compare, impl_row


@dataclass
class StepConfig:
    device: str = "cpu"
    sizes: str = "quick"
    models: tuple = tuple(MODELS)
    modes: tuple = ("eager", "compile")
    latents: tuple = LATENTS
    rounds: int = 5
    steps_per_round: int = 3
    warmup: int = 3
    threads: int | None = None
    clock: str = "wall"  # measure.CLOCKS
    quiet: bool = False


def _log(config, text):
    if not config.quiet:
        print(text, file=sys.stderr, flush=True)


def run_model(config, name) -> tuple[list[dict], str | None]:
    """Rows of one model case, or ([], why) when the case cannot run here."""
    case = MODELS[name]
    if not case.available():
        return [], f"{name}: skipped, needs {case.needs} (pip install {case.needs})"
    model, x = case.make(config.sizes, config.device)
    layers = latent_layers(name)
    impls = [Impl(mode, latent, loss_function(model, layers[latent], mode)) for mode in config.modes
             for latent in config.latents]  # fmt: skip
    start = time.perf_counter()
    measure_case(model, x, impls, config.device, config.rounds, config.steps_per_round, config.warmup, config.clock)
    size = case.sizes[config.sizes]
    rows = [impl_row(name, size, impl) for impl in impls]
    for row in rows:
        timing = "ERROR " + row["error"] if row.get("error") else f"{row['median_ms']:.4g} ms"
        _log(config, f"{name} {row['mode']:7s} {row['latent']:7s}: {timing}")
    _log(config, f"{name}: {time.perf_counter() - start:.0f} s")
    return rows, None


def run_step_bench(config: StepConfig) -> dict:
    """Runs every selected case; returns the result document's rows, comparisons, skips and context."""
    threads = config.threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    load_start, start = load_average(), time.perf_counter()
    rows, skipped = [], []
    try:
        with raised_recompile_limit():
            for name in config.models:
                model_rows, why = run_model(config, name)
                rows += model_rows
                if why:
                    skipped.append(why)
                    _log(config, why)
    finally:
        torch.set_num_threads(previous)
    return {
        "results": rows,
        "comparisons": compare(rows),
        "skipped": skipped,
        "threads": threads if config.device == "cpu" else None,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "wall_s": time.perf_counter() - start,
        "compile_options": dict(COMPILE_OPTIONS),
        "settings": {
            "sizes": config.sizes,
            "rounds": config.rounds,
            "steps_per_round": config.steps_per_round,
            "warmup": config.warmup,
            "clock": config.clock,
        },
    }
