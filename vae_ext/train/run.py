"""One train command run: data, model, epochs (a checkpoint and metrics.json after each), then
the final metrics and the figures. Stops cleanly on SIGINT / SIGTERM and on divergence."""

from __future__ import annotations

import os
import signal
import sys
import time

import torch

from . import evaluation, figures, records
from .atomic import remove_temporaries, write_atomic
from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .data import load_data
from .distributed import unwrap
from .loop import Trainer, means, on_device
from .models import build_model, init_output_bias, model_config
from .progress import Progress
from .stopping import EXIT_DIVERGED, Divergence, StopRequests, exit_code

METRICS_NAME = "metrics.json"


def default_out_dir() -> str:
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def _log(args, procs, text):
    if procs.is_main and not args.quiet:
        print(text, flush=True)


def _describe(args, procs, train_set, test_set, model):
    params = sum(p.numel() for p in model.parameters())
    return (
        f"{args.model.upper()} ({args.arch}, latent {args.latent_dim}, {params:,} parameters) on {train_set.name}: "
        f"{len(train_set)} train / {len(test_set)} test samples of shape {list(train_set.sample_shape)}, "
        f"device {procs.device}, {procs.world_size} process(es), amp {args.amp}"
    )


def _check_resumable(checkpoint, procs, path) -> None:
    if checkpoint["world_size"] != procs.world_size:
        raise ValueError(
            f"{path}: the run had {checkpoint['world_size']} process(es), this one has {procs.world_size}: each "
            "process's data share and random states belong to it, so resume with the run's number of processes"
        )
    if checkpoint["device_type"] != procs.device.type:
        raise ValueError(
            f"{path}: the run trained on {checkpoint['device_type']}, this one on {procs.device.type}: "
            "resume with the run's --device"
        )


class Run:
    """The state of one run around its Trainer: where it writes, its records, its timings."""

    def __init__(self, args, procs, checkpoint=None):
        self.args, self.procs = args, procs
        self.out_dir = args.out
        self.checkpoint_path = os.path.join(self.out_dir, CHECKPOINT_NAME)
        self.metrics_path = os.path.join(self.out_dir, METRICS_NAME)
        self.started = time.perf_counter()
        self.records: list[dict] = []
        self.train_seconds_before = 0.0
        if checkpoint is not None:
            _check_resumable(checkpoint, procs, self.checkpoint_path)
            self.records = list(checkpoint["epoch_records"])
            self.train_seconds_before = checkpoint["train_seconds"]
        elif os.path.exists(self.checkpoint_path):
            raise ValueError(
                f"{self.out_dir} already holds a run ({CHECKPOINT_NAME}): continue it with "
                f"'python -m vae_ext train --out {self.out_dir} --resume', or choose another --out"
            )

    def train_seconds(self) -> float:
        return self.train_seconds_before + time.perf_counter() - self.started

    def save(self, trainer, info: dict) -> dict | None:
        """The checkpoint (every process takes part: rank 0 gathers the random states and writes),
        then metrics.json made from it. The checkpoint on rank 0, None elsewhere."""
        ranks = self.procs.gather(trainer.rank_state())
        if not self.procs.is_main:
            return None
        checkpoint = {
            **info,
            **trainer.shared_state(),
            "ranks": ranks,
            "epoch_records": list(self.records),
            "train_seconds": self.train_seconds(),
        }
        save_checkpoint(self.checkpoint_path, checkpoint)
        self.write_metrics(checkpoint, None)
        return checkpoint

    def write_metrics(self, checkpoint: dict, final: dict | None) -> None:
        import vae_ext

        content = records.metrics(checkpoint, final, vae_ext.build_info(), time.perf_counter() - self.started)
        write_atomic(self.metrics_path, lambda f: records.dump(content, f), binary=False)

    def resume_hint(self) -> str:
        command = "python -m vae_ext train"
        if self.procs.distributed:
            command = f"torchrun --nproc_per_node {self.procs.world_size} -m vae_ext train"
        return f"resume with: {command} --out {self.out_dir} --resume"


def run(args, procs, checkpoint=None) -> int:
    if args.out is None:  # the folder is part of the run's record (and of how to resume it)
        args.out = default_out_dir()
    with StopRequests() as stop:
        try:
            return _run(args, procs, checkpoint, stop)
        except Divergence as divergence:
            if procs.is_main:
                _report_divergence(args, divergence)
            return EXIT_DIVERGED


def _report_divergence(args, divergence: Divergence) -> None:
    kept = os.path.join(args.out, CHECKPOINT_NAME)
    kept = f"{kept} keeps the last good state" if os.path.exists(kept) else "no checkpoint was written before it"
    print(
        f"error: training diverged: {divergence} (step {divergence.run_step} of the run); {kept}; "
        "a lower --lr (or --logvar-clamp) may help",
        file=sys.stderr,
        flush=True,
    )


def _run(args, procs, checkpoint, stop) -> int:
    state = Run(args, procs, checkpoint)
    if procs.is_main:
        os.makedirs(state.out_dir, exist_ok=True)
        for path in (state.checkpoint_path, state.metrics_path):
            remove_temporaries(path)  # left by a kill in the middle of a write
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_set, test_set = load_data(args, procs)
    config = model_config(args, train_set.sample_shape)
    model = build_model(config)
    init_output_bias(model, train_set.images, config)
    model = procs.wrap(model.to(procs.device))
    train_images = on_device(train_set.images, procs.device)
    test_images = test_set.images.to(procs.device)
    trainer = Trainer(args, procs, model, train_images, stop)
    info = {
        "config": config,
        "args": dict(vars(args)),
        "data": {"name": train_set.name, "train": len(train_set), "test": int(test_images.shape[0])},
        "device": str(procs.device),
        "device_type": procs.device.type,
        "world_size": procs.world_size,
    }
    if checkpoint is not None:
        trainer.load_state(checkpoint)
        if procs.is_main:
            state.write_metrics(checkpoint, None)  # repairs a kill between the checkpoint and metrics.json
        if trainer.epoch < args.epochs:
            _log(args, procs, f"resuming {state.out_dir} at epoch {trainer.epoch + 1}, step {trainer.batch}")
        else:
            _log(args, procs, f"{state.out_dir}: training is complete; writing the final metrics and figures")
    _log(args, procs, _describe(args, procs, train_set, test_set, unwrap(model)))
    progress = Progress(procs.is_main and not args.quiet, args.epochs, args.progress_every)
    while trainer.epoch < args.epochs:
        epoch_start = time.perf_counter()
        sums = trainer.train_epoch(progress)
        if sums is None:  # stopped in the middle of the epoch
            trainer.check_finite()
            state.save(trainer, info)
            return _stopped(state, trainer, stop.signum, "at", f"epoch {trainer.epoch + 1}, step {trainer.batch}")
        train = means(sums)
        test = means(trainer.evaluate(test_images))
        trainer.check_test(test)
        beta = unwrap(model).beta if trainer.is_vae else 0.0
        record = records.epoch_record(trainer.epoch, train, test, beta, time.perf_counter() - epoch_start)
        state.records.append(record)
        state.save(trainer, info)
        _log(args, procs, records.epoch_line(record, args.epochs, trainer.is_vae))
        if trainer.epoch < args.epochs and trainer.stop_agreed():
            return _stopped(state, trainer, stop.signum, "after", f"epoch {trainer.epoch}")
    procs.barrier()
    code = _finish(state, trainer, info, stop, test_set, test_images) if procs.is_main else 0
    # Every process leaves together: one that tore its connections down while rank 0 still
    # wrote the final metrics and figures was seen to abort in gloo (SIGABRT, under load).
    procs.barrier()
    return code


def _stopped(state, trainer, signum, where, when) -> int:
    if state.procs.is_main:
        name = signal.Signals(signum).name
        print(f"stopped by {name} {where} {when}: checkpoint saved; {state.resume_hint()}", file=sys.stderr, flush=True)
    return exit_code(signum)


def _finish(state, trainer, info, stop, test_set, test_images) -> int:
    args = state.args
    model = unwrap(trainer.model).eval()
    final = evaluation.iwae_metrics(args, model, test_images, state.procs.device)
    final.update({"test_loss": state.records[-1]["test_loss"], "train_loss": state.records[-1]["train_loss"]})
    checkpoint = {
        **info,
        **trainer.shared_state(),
        "epoch_records": state.records,
        "train_seconds": state.train_seconds(),
    }
    state.write_metrics(checkpoint, final)
    written = [CHECKPOINT_NAME, METRICS_NAME]
    if stop.signum and args.figures:
        print(
            f"stopped by {signal.Signals(stop.signum).name} before the figures: training is complete; "
            f"{state.resume_hint()} writes them",
            file=sys.stderr,
            flush=True,
        )
        return exit_code(stop.signum)
    try:
        if args.figures:
            written += write_figures(state.out_dir, args, model, trainer, state.records, test_set, test_images)
    except ImportError as error:  # matplotlib is optional: the run itself is complete
        print(f"note: no figures written: {error}", file=sys.stderr)
    summary = f"final: test {'-elbo' if trainer.is_vae else 'loss'} {final['test_loss']:.4f}"
    if "test_log_px_iwae" in final:
        summary += f", test log p(x) >= {final['test_log_px_iwae']:.4f} (IWAE, k={final['iwae_k']})"
    print(
        f"{summary}; {state.train_seconds():.1f}s training; wrote {', '.join(written)} to {state.out_dir}", flush=True
    )
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
