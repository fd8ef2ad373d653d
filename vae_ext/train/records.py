"""What a run reports: the per-epoch record and line, and metrics.json (made from the checkpoint)."""

from __future__ import annotations

import json


def epoch_record(epoch, train, test, beta, seconds) -> dict:
    return {
        "epoch": epoch,
        "train_loss": train["loss"],
        "train_recon": train["recon"],
        "train_kl": train["kl"],
        "beta": beta,
        "test_loss": test["loss"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "seconds": seconds,
    }


def epoch_line(record: dict, epochs: int, is_vae: bool) -> str:
    line = f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f}"
    if is_vae:
        line += f" (recon {record['train_recon']:.4f}, kl {record['train_kl']:.4f}, beta {record['beta']:.3g})"
    line += f"  test {'-elbo' if is_vae else 'loss'} {record['test_loss']:.4f}  {record['seconds']:.1f}s"
    return line


def metrics(checkpoint: dict, final: dict | None, build_info: dict, wall_seconds: float | None = None) -> dict:
    """metrics.json's content, all of it from the checkpoint but ``final`` (None until the last
    epoch is done and evaluated) and the timings of this process."""
    steps = {key: values.tolist() for key, values in checkpoint["steps"].items()}
    return {
        "config": checkpoint["config"],
        "args": checkpoint["args"],
        "data": checkpoint["data"],
        "device": checkpoint["device"],
        "world_size": checkpoint["world_size"],
        "epochs": checkpoint["epoch_records"],
        "step_losses": steps["loss"],
        "step_recon": steps["recon"],
        "step_kl": steps["kl"],
        "step_beta": steps["beta"],
        "final": final,
        "complete": final is not None,
        "train_seconds": checkpoint["train_seconds"],
        "wall_seconds": wall_seconds,
        "build_info": build_info,
    }


def dump(metrics_dict: dict, f) -> None:
    json.dump(metrics_dict, f, indent=2)
