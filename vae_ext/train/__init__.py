"""``python -m vae_ext train``: train a VAE or an AE and write what it learned.

Writes to ``--out`` (default runs/<timestamp>): checkpoint.pt (model state + config, reload
with ``vae_ext.train.load_checkpoint``), metrics.json, and with matplotlib (the ``[train]``
extra) loss_curve.png, reconstructions.png, samples.png, latent_traversal.png (latents of up to
16 dimensions) and latent_scatter.png (2-d latents).

Multi-process data parallel: ``torchrun --nproc_per_node N -m vae_ext train ...`` (gloo on
CPU, NCCL on CUDA). ``--batch-size`` is per process; with the same seed, N processes with
batch size b see the same global batches as one process with batch size N·b.

Files: cli (options, entry point), data / sources / dataset / shapes / files / idx (data sets),
models, loop (training loop), evaluation, figures, progress, checkpoint, distributed, run.
"""

from __future__ import annotations

from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from .cli import DESCRIPTION, build_parser, main, parse_args
from .data import load_data
from .models import build_model, model_config

__all__ = [
    "CHECKPOINT_FORMAT",
    "DESCRIPTION",
    "build_model",
    "build_parser",
    "load_checkpoint",
    "load_data",
    "main",
    "model_config",
    "parse_args",
    "save_checkpoint",
]
