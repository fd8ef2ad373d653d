"""``python -m vae_ext bench step``: what the latent layer costs in a whole VAE training step.

Files: models (the model cases and their sizes), latents (the eager, vae_ext and free latent
layers), measure (one case's steps in rounds: time, saved bytes, CUDA peak memory), results
(rows and the per-round comparisons), run, table, cli. benchmarks/README.md describes the
options and the result files.
"""

from __future__ import annotations

from .cli import main
from .latents import LATENTS, latent_layers
from .models import MODELS
from .run import StepConfig, run_step_bench

__all__ = ["LATENTS", "MODELS", "StepConfig", "latent_layers", "main", "run_step_bench"]
