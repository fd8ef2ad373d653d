"""checkpoint.pt: what the train command saves after every epoch (and on a stop) and how to load it.

The checkpoint is the run's source of truth: besides the model it holds everything that decides
the rest of the run (optimizer, gradient scaler, step and epoch counters, every process's random
states, the partial sums of an epoch stopped in the middle) and the records metrics.json is
made from.
"""

from __future__ import annotations

import os
import pickle

import torch

from .atomic import write_atomic
from .models import build_model

CHECKPOINT_FORMAT = "vae_ext.train/2"
_READABLE_FORMATS = ("vae_ext.train/1", CHECKPOINT_FORMAT)  # format 1: written once, at the end; no run state
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path, checkpoint: dict) -> None:
    """``checkpoint`` (the dict Trainer.checkpoint builds) written atomically."""
    write_atomic(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **checkpoint}, f))


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint dict (tensors and plain values only: weights_only=True), or ValueError
    ``<path>: <what is wrong>`` for a file that is missing, unreadable or not a vae_ext checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a readable checkpoint ({reason})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") not in _READABLE_FORMATS:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: not a vae_ext train checkpoint (format {found!r})")
    return checkpoint


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint dict) from a checkpoint.pt written by the train command."""
    checkpoint = read_checkpoint(path, map_location)
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint
