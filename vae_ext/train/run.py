"""One train command run: data, model, epochs, then the checkpoint, metrics.json and figures."""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from . import evaluation, figures
from .checkpoint import save_checkpoint
from .data import load_data
from .distributed import unwrap
from .loop import Trainer, means, on_device
from .models import build_model, init_output_bias, model_config
from .progress import Progress


def default_out_dir() -> str:
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def _log(args, procs, text):
    if procs.is_main and not args.quiet:
        print(text, flush=True)


def _epoch_line(epoch, epochs, train, test, beta, seconds, is_vae):
    line = f"epoch {epoch}/{epochs}  train loss {train['loss']:.4f}"
    if is_vae:
        line += f" (recon {train['recon']:.4f}, kl {train['kl']:.4f}, beta {beta:.3g})"
    line += f"  test {'-elbo' if is_vae else 'loss'} {test['loss']:.4f}  {seconds:.1f}s"
    return line


def _epoch_record(epoch, train, test, beta, seconds):
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


def _describe(args, procs, train_set, test_set, model):
    params = sum(p.numel() for p in model.parameters())
    return (
        f"{args.model.upper()} ({args.arch}, latent {args.latent_dim}, {params:,} parameters) on {train_set.name}: "
        f"{len(train_set)} train / {len(test_set)} test samples of shape {list(train_set.sample_shape)}, "
        f"device {procs.device}, {procs.world_size} process(es), amp {args.amp}"
    )


def run(args, procs) -> int:
    started = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_set, test_set = load_data(args)
    config = model_config(args, train_set.sample_shape)
    model = build_model(config)
    init_output_bias(model, train_set.images, config)
    model = procs.wrap(model.to(procs.device))
    train_images = on_device(train_set.images, procs.device)
    test_images = test_set.images.to(procs.device)
    trainer = Trainer(args, procs, model, train_images)
    _log(args, procs, _describe(args, procs, train_set, test_set, unwrap(model)))
    progress = Progress(procs.is_main and not args.quiet, args.epochs, args.progress_every)
    epochs = []
    for epoch in range(args.epochs):
        epoch_start = time.perf_counter()
        train = means(trainer.train_epoch(epoch, progress))
        test = means(trainer.evaluate(test_images))
        seconds = time.perf_counter() - epoch_start
        beta = unwrap(model).beta if trainer.is_vae else 0.0
        epochs.append(_epoch_record(epoch + 1, train, test, beta, seconds))
        _log(args, procs, _epoch_line(epoch + 1, args.epochs, train, test, beta, seconds, trainer.is_vae))
    train_seconds = time.perf_counter() - started
    procs.barrier()
    if not procs.is_main:
        return 0
    return _finish(args, procs, config, trainer, epochs, test_set, test_images, train_seconds, started, train_set)


def _finish(args, procs, config, trainer, epochs, test_set, test_images, train_seconds, started, train_set):
    import vae_ext

    out_dir = args.out or default_out_dir()
    os.makedirs(out_dir, exist_ok=True)
    model = unwrap(trainer.model).eval()
    save_checkpoint(os.path.join(out_dir, "checkpoint.pt"), args, config, model, trainer.optimizer, len(epochs))
    final = evaluation.iwae_metrics(args, model, test_images, procs.device)
    final.update({"test_loss": epochs[-1]["test_loss"], "train_loss": epochs[-1]["train_loss"]})
    metrics = {
        "config": config,
        "args": vars(args),
        "data": {"name": train_set.name, "train": len(train_set), "test": int(test_images.shape[0])},
        "device": str(procs.device),
        "world_size": procs.world_size,
        "epochs": epochs,
        "step_losses": trainer.steps["loss"],
        "step_recon": trainer.steps["recon"],
        "step_kl": trainer.steps["kl"],
        "step_beta": trainer.steps["beta"],
        "final": final,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "build_info": vae_ext.build_info(),
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    written = ["checkpoint.pt", "metrics.json"]
    try:
        written += write_figures(out_dir, args, model, trainer, epochs, test_set, test_images)
    except ImportError as error:  # matplotlib is optional: the run itself is complete
        print(f"note: no figures written: {error}", file=sys.stderr)
    summary = f"final: test {'-elbo' if trainer.is_vae else 'loss'} {final['test_loss']:.4f}"
    if "test_log_px_iwae" in final:
        summary += f", test log p(x) >= {final['test_log_px_iwae']:.4f} (IWAE, k={final['iwae_k']})"
    print(f"{summary}; {train_seconds:.1f}s training; wrote {', '.join(written)} to {out_dir}", flush=True)
    return 0


def _is_image_shape(shape) -> bool:
    return len(shape) == 3 and shape[0] in (1, 3)


@torch.no_grad()
def write_figures(out_dir, args, model, trainer, epochs, test_set, test_images) -> list[str]:
    """The PNGs of a run; returns their file names."""
    is_vae = trainer.is_vae
    loss_name = "nats per sample (batch mean)" if is_vae else f"{args.ae_loss} loss (batch mean)"
    figures.loss_curve(
        os.path.join(out_dir, "loss_curve.png"), trainer.steps, epochs, trainer.steps_per_epoch, is_vae, loss_name
    )
    names = ["loss_curve.png"]
    shape = tuple(test_images.shape[1:])
    if _is_image_shape(shape):
        originals = test_images[:32]
        recon = model.reconstruct(originals).float().reshape(originals.shape)
        figures.reconstructions(os.path.join(out_dir, "reconstructions.png"), originals, recon)
        generated = evaluation.generate(model, test_images, 64, args.seed).float().reshape(64, *shape)
        title = "decoded draws from the prior p(z)" if is_vae else "decoded draws from N(mean, sd of the test codes)"
        figures.samples(os.path.join(out_dir, "samples.png"), generated, title)
        names += ["reconstructions.png", "samples.png"]
        if args.latent_dim <= 16:
            steps, max_rows = figures.TRAVERSAL_STEPS, figures.TRAVERSAL_ROWS
            rows, values, label = evaluation.traversal(model, test_images, steps, max_rows)
            figures.latent_traversal(os.path.join(out_dir, "latent_traversal.png"), rows, values, label)
            names.append("latent_traversal.png")
    if args.latent_dim == 2:
        codes = evaluation.codes(model, test_images)
        what = "posterior means μ(x)" if is_vae else "codes"
        figures.latent_scatter(
            os.path.join(out_dir, "latent_scatter.png"),
            codes,
            test_set.labels,
            test_set.label_names,
            f"{what} of the {codes.shape[0]} test samples",
        )
        names.append("latent_scatter.png")
    return names
