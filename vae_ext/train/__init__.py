"""``python -m vae_ext train``: train a VAE or an AE and write what it learned.

Writes to ``--out`` (default runs/<timestamp>), after every epoch: checkpoint.pt (the model,
reload it with ``vae_ext.train.load_checkpoint``, and all the run's state) and metrics.json
(made from it), each replaced atomically; at the end, with matplotlib (the ``[train]`` extra),
loss_curve.png, reconstructions.png, samples.png, latent_traversal.png (latents of up to 16
dimensions) and latent_scatter.png (2-d latents). ``--out DIR --resume`` continues the run in
DIR to the numbers of an uninterrupted one; SIGINT / SIGTERM save a checkpoint at the end of
the current step. Exit status: 0 done, 1 diverged (a non-finite loss), 2 bad options, data,
device or checkpoint, 130 / 143 stopped by SIGINT / SIGTERM.

Multi-process data parallel: ``torchrun --nproc_per_node N -m vae_ext train ...`` (gloo on
CPU, NCCL on CUDA). ``--batch-size`` is per process; with the same seed, N processes with
batch size b see the same global batches as one process with batch size N·b.

Files: cli (options, entry point), amp, data / sources / dataset / shapes / files / idx /
downloads (data sets), models, loop (training loop), evaluation, figures, progress, records
(epoch records, metrics.json), atomic (file writes), checkpoint, resume, stopping (signals,
divergence), distributed, run.
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
