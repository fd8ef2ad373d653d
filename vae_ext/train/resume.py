"""--resume: the options of a resumed run, from its checkpoint and the command line."""

from __future__ import annotations

import argparse

# The options that decide the numbers of a run: a resumed run must keep them.
RUN_OPTIONS = (
    "model", "data", "shapes", "size", "limit", "test_fraction", "arch", "hidden", "latent_dim", "likelihood",
    "ae_loss", "prior", "beta", "warmup", "free_bits", "logvar_clamp", "batch_size", "lr", "threads", "amp",
    "compile", "seed",
)  # fmt: skip
# How the run shows itself: always this command line's (its defaults when left off).
DISPLAY_OPTIONS = ("out", "resume", "quiet", "progress_every", "figures")
# Everything else (--epochs, --device, --data-dir, --iwae-k, --iwae-samples) comes from the
# command line when given there, else from the checkpoint.


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def resumed_args(args: argparse.Namespace, given: set, checkpoint: dict, path) -> argparse.Namespace:
    """``args`` for continuing the run of ``checkpoint``: the options left off the command line
    (``given`` holds the ones on it) from the checkpoint. ValueError naming the option when one
    on the command line differs from the run's, or when --epochs cannot change."""
    if "batch" not in checkpoint:
        raise ValueError(f"{path}: written by a vae_ext that saved no run state (format 1): it cannot be resumed")
    saved = checkpoint["args"]
    merged = dict(saved)
    for key in given:
        value = getattr(args, key)
        if key in RUN_OPTIONS and value != saved.get(key):
            raise ValueError(
                f"{flag(key)} {_show(value)} differs from the run's {_show(saved.get(key))} in {path}: a resumed "
                f"run keeps the options that decide its numbers (leave {flag(key)} off to take the run's)"
            )
        merged[key] = value
    for key in DISPLAY_OPTIONS:
        merged[key] = getattr(args, key)
    if merged["epochs"] != saved["epochs"]:
        _check_epochs(merged["epochs"], saved, checkpoint)
    return argparse.Namespace(**merged)


def _check_epochs(epochs: int, saved: dict, checkpoint: dict) -> None:
    started = checkpoint["epochs"] + (1 if checkpoint["batch"] else 0)
    if saved["warmup"] != "none":
        raise ValueError(
            f"--epochs {epochs} differs from the run's {saved['epochs']}, and --warmup {saved['warmup']} spreads β "
            "over the run's total number of steps: with another --epochs every step's β changes, so it would be "
            "another run from its first step. Resume with the run's --epochs, or start a new run with another --out"
        )
    if epochs < started:
        raise ValueError(f"--epochs {epochs}: the run has already trained {started} epoch(s)")


def _show(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
