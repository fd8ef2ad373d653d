"""checkpoint.pt: what the train command saves and how to load it back."""

from __future__ import annotations

import os

import torch

from .models import build_model

CHECKPOINT_FORMAT = "vae_ext.train/1"


def save_checkpoint(path, args, config: dict, model: torch.nn.Module, optimizer, epochs_done: int) -> None:
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epochs": epochs_done,
            "args": dict(vars(args)),
        },
        path,
    )


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint dict) from a checkpoint.pt written by the train command."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a vae_ext train checkpoint (format {checkpoint.get('format')!r})")
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint
