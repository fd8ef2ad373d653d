"""``python -m vae_ext train``: train a VAE or an AE on the built-in shapes or on a data file.

Writes to ``--out`` (default runs/<timestamp>): checkpoint.pt (model state + config, reload
with ``load_checkpoint``), metrics.json, reconstructions.png, samples.png and loss_curve.png.

Multi-process data parallel: ``torchrun --nproc_per_node N -m vae_ext train ...`` (gloo on
CPU, NCCL on CUDA). ``--batch-size`` is per process; with the same seed, N processes with
batch size b see the same global batches as one process with batch size N·b.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from . import data as data_lib
from . import images
from .losses import AE_LOSSES, LIKELIHOODS
from .modules import AE, VAE, conv_decoder, conv_encoder, mlp_decoder, mlp_encoder
from .schedules import WARMUPS, make_beta_schedule

CHECKPOINT_FORMAT = "vae_ext.train/1"
_AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_MODEL_KEYS = (
    "model", "arch", "hidden", "latent_dim", "likelihood", "ae_loss", "beta", "free_bits", "prior", "logvar_clamp",
)  # fmt: skip


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m vae_ext train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", choices=("vae", "ae"), default="vae", help="variational or plain autoencoder")
    p.add_argument("--data", default="shapes", help="'shapes' (built in) or a .npy / .pt / IDX file or MNIST folder")
    p.add_argument("--shapes", type=int, default=20000, help="number of built-in shape images")
    p.add_argument("--size", type=int, default=32, help="side of the built-in shape images")
    p.add_argument("--limit", type=int, default=None, help="use only the first N samples (quick runs)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out fraction")
    p.add_argument("--arch", choices=("mlp", "conv"), default="mlp", help="encoder / decoder networks")
    p.add_argument("--hidden", default="512,256", help="MLP hidden widths, encoder order")
    p.add_argument("--latent-dim", type=int, default=10, help="latent dimensions L")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli", help="VAE p(x|z)")
    p.add_argument("--ae-loss", choices=AE_LOSSES, default="mse", help="AE reconstruction loss")
    p.add_argument("--prior", choices=("standard", "learnable"), default="standard", help="VAE prior p(z)")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (after warm-up)")
    p.add_argument("--warmup", choices=WARMUPS, default="none", help="KL warm-up schedule for beta")
    p.add_argument("--free-bits", type=float, default=0.0, help="free bits per latent dimension (nats)")
    p.add_argument("--logvar-clamp", type=float, default=None, help="clamp logvar to [-C, C]")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")
    p.add_argument("--amp", choices=tuple(_AMP_DTYPES), default="none", help="autocast dtype")
    p.add_argument("--seed", type=int, default=0, help="seeds the data, the model and the sampling")
    p.add_argument("--iwae-k", type=int, default=64, help="importance samples for the test log p(x) (0: skip)")
    p.add_argument("--iwae-samples", type=int, default=500, help="test images for the log p(x) estimate")
    p.add_argument("--out", default=None, help="output folder (default runs/<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    return p


def parse_args(argv):
    args = build_parser().parse_args(argv)
    checks = (
        (args.epochs >= 1, "--epochs must be >= 1"),
        (args.batch_size >= 1, "--batch-size must be >= 1"),
        (args.latent_dim >= 1, "--latent-dim must be >= 1"),
        (args.lr > 0, "--lr must be > 0"),
        (args.beta >= 0, "--beta must be >= 0"),
        (args.free_bits >= 0, "--free-bits must be >= 0"),
        (args.limit is None or args.limit >= 2, "--limit must be >= 2"),
        (0 < args.test_fraction < 1, "--test-fraction must be in (0, 1)"),
        (args.iwae_k >= 0, "--iwae-k must be >= 0"),
        (args.threads is None or args.threads >= 1, "--threads must be >= 1"),
    )
    for ok, message in checks:
        if not ok:
            build_parser().error(message)
    args.hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    return args


# --------------------------------------------------------------------------- model


def model_config(args, sample_shape) -> dict:
    config = {key: getattr(args, key) for key in _MODEL_KEYS}
    config["sample_shape"] = list(sample_shape)
    return config


def _networks(config, out_features):
    shape, latent = tuple(config["sample_shape"]), config["latent_dim"]
    if config["arch"] == "conv":
        return conv_encoder(shape, out_features), conv_decoder(latent, shape)
    hidden = tuple(config["hidden"])
    return mlp_encoder(shape, out_features, hidden), mlp_decoder(latent, shape, hidden[::-1])


def build_model(config: dict) -> torch.nn.Module:
    """A fresh VAE or AE from a model config (what checkpoints store under "config")."""
    if config["model"] == "ae":
        encoder, decoder = _networks(config, config["latent_dim"])
        return AE(encoder, torch.nn.Sequential(decoder, torch.nn.Sigmoid()), loss=config["ae_loss"])
    encoder, decoder = _networks(config, 2 * config["latent_dim"])
    return VAE(
        encoder,
        decoder,
        latent_dim=config["latent_dim"],
        likelihood=config["likelihood"],
        beta=config["beta"],
        free_bits=config["free_bits"],
        prior=config["prior"],
        logvar_clamp=config["logvar_clamp"],
    )


def _output_layer(decoder):
    """The decoder's last layer with a bias (Linear or transposed convolution)."""
    for module in reversed(list(decoder.modules())):
        if isinstance(module, (torch.nn.Linear, torch.nn.ConvTranspose2d)) and module.bias is not None:
            return module
    return None


@torch.no_grad()
def init_output_bias(model, images, config):
    """Starts the decoder at the data's mean image (logits of it for Bernoulli outputs and the
    AE's sigmoid). Without it the first steps spend huge gradients on learning the mostly dark
    background, which can push the encoder into a collapsed state."""
    layer = _output_layer(model.decoder)
    if layer is None:
        return
    mean = images.float().mean(dim=0)
    if isinstance(layer, torch.nn.ConvTranspose2d):
        mean = mean.reshape(mean.shape[0], -1).mean(dim=1)
    else:
        mean = mean.flatten()
    if mean.numel() != layer.bias.numel():
        return
    if config["model"] == "ae" or config["likelihood"] == "bernoulli":
        mean = mean.clamp(1e-3, 1 - 1e-3)
        mean = torch.log(mean) - torch.log1p(-mean)
    layer.bias.copy_(mean)


def load_checkpoint(path, map_location="cpu"):
    """(model in eval mode, checkpoint dict) from a checkpoint.pt written by this command."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a vae_ext train checkpoint (format {checkpoint.get('format')!r})")
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


# --------------------------------------------------------------------------- processes and devices


class Processes:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    def __init__(self, device_arg):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
        self.world_size = world
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = select_device(device_arg, local_rank if world > 1 else None)
        if world > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend)

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def all_sum(self, tensor):
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def close(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def select_device(arg, local_rank=None):
    if arg == "auto":
        arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(arg)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch.cuda.is_available() is False")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    return device


# --------------------------------------------------------------------------- data


def load_data(args):
    """(train, test) Datasets, after --limit."""
    n_shapes = args.shapes if args.limit is None else min(args.shapes, args.limit)
    dataset = data_lib.load_dataset(args.data, seed=args.seed, size=args.size, n=n_shapes)
    if args.limit is not None:
        dataset = dataset.subset(slice(0, args.limit))
    if args.arch == "conv" and len(dataset.sample_shape) != 3:
        raise ValueError(f"--arch conv needs image data [N, C, H, W], got samples of shape {dataset.sample_shape}")
    return data_lib.train_test_split(dataset, args.test_fraction, seed=args.seed)


def _on_device(tensor, device):
    """The whole data set on the device when it is small (index there), else stays on the CPU."""
    return tensor.to(device) if tensor.numel() * tensor.element_size() < 2**30 else tensor


def batch_indices(sampler, batch_size):
    order = torch.tensor(list(iter(sampler)), dtype=torch.int64)
    return list(order.split(batch_size))


# --------------------------------------------------------------------------- one epoch


class Progress:
    """An in-place progress line on stderr (only when it is a terminal and not --quiet)."""

    def __init__(self, enabled):
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def due(self):
        """Whether a new line is to be shown now (at most five a second)."""
        return self.enabled and time.monotonic() - self.last > 0.2

    def show(self, text):
        self.last = time.monotonic()
        sys.stderr.write("\r" + text[:110].ljust(110))
        sys.stderr.flush()

    def clear(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 110 + "\r")
            sys.stderr.flush()


def _autocast(device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def _forward(model, x, generator, is_vae):
    return model(x, generator=generator) if is_vae else model(x)


def _batch_sums(out, is_vae, n):
    """[loss, recon, kl] summed over a batch (means times n), left on the device (no sync)."""
    if is_vae:
        values = (out.loss, out.recon_loss, out.kl)
    else:
        values = (out.loss, out.loss, torch.zeros_like(out.loss))
    return torch.stack([v.detach().float() * n for v in values])


def _with_count(sums, count):
    return torch.cat((sums, torch.tensor([float(count)], device=sums.device)))


class Trainer:
    def __init__(self, args, procs, model, train_images):
        self.args, self.procs = args, procs
        self.is_vae = args.model == "vae"
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        self.amp_dtype = _AMP_DTYPES[args.amp]
        self.scaler = torch.amp.GradScaler(procs.device.type, enabled=self.amp_dtype == torch.float16)
        self.train_images = train_images
        # One process or many: the same seeded shuffle, split across processes (see module doc).
        self.sampler = DistributedSampler(
            range(train_images.shape[0]), num_replicas=procs.world_size, rank=procs.rank, seed=args.seed
        )
        steps_per_epoch = math.ceil(len(self.sampler) / args.batch_size)
        self.schedule = make_beta_schedule(args.warmup, args.beta, steps_per_epoch * args.epochs)
        self.generator = torch.Generator(procs.device).manual_seed(args.seed * 65536 + procs.rank)
        self.step = 0
        self.step_losses = []

    def train_epoch(self, epoch, progress):
        self.model.train()
        self.sampler.set_epoch(epoch)
        batches = batch_indices(self.sampler, self.args.batch_size)
        sums, count, losses = torch.zeros(3, device=self.procs.device), 0, []
        for index, idx in enumerate(batches):
            x = self.train_images[idx.to(self.train_images.device)].to(self.procs.device, non_blocking=True)
            out = self.train_step(x)
            sums += _batch_sums(out, self.is_vae, x.shape[0])
            count += x.shape[0]
            losses.append(out.loss.detach().float())
            if progress.due():  # reading the loss waits for the device: only when it is shown
                progress.show(
                    f"epoch {epoch + 1}/{self.args.epochs} [{_bar(index + 1, len(batches))}] "
                    f"{index + 1}/{len(batches)} loss {losses[-1].item():.3f}"
                )
        self.step_losses.extend(torch.stack(losses).tolist())
        return self.procs.all_sum(_with_count(sums, count))

    def train_step(self, x):
        if self.is_vae:
            _unwrap(self.model).beta = self.schedule(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.procs.device, self.amp_dtype):
            out = _forward(self.model, x, self.generator, self.is_vae)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return out

    @torch.no_grad()
    def evaluate(self, test_images):
        """Test [loss, recon, kl, n] sums over every process's share; the VAE loss is the plain
        negative ELBO (β = 1, no free bits), with a fixed ε seed so epochs compare."""
        model = _unwrap(self.model).eval()
        share = test_images[self.procs.rank :: self.procs.world_size]
        generator = torch.Generator(self.procs.device).manual_seed(self.args.seed + 1)
        sums = torch.zeros(3, device=self.procs.device)
        for x in share.split(512):
            x = x.to(self.procs.device)
            with _autocast(self.procs.device, self.amp_dtype):
                out = _forward(model, x, generator, self.is_vae)
            if self.is_vae:
                out = out._replace(loss=out.recon_loss + out.kl)
            sums += _batch_sums(out, self.is_vae, x.shape[0])
        return self.procs.all_sum(_with_count(sums, share.shape[0]))


def _bar(done, total, width=24):
    filled = round(width * done / max(total, 1))
    return "#" * filled + "-" * (width - filled)


def _means(sums):
    loss, recon, kl, n = sums.tolist()
    n = max(n, 1.0)
    return {"loss": loss / n, "recon": recon / n, "kl": kl / n}


# --------------------------------------------------------------------------- outputs


def default_out_dir():
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def _is_image_shape(shape):
    return len(shape) == 3 and shape[0] in (1, 3)


def _image_scale(shape):
    return max(1, 96 // max(shape[1], shape[2]))


@torch.no_grad()
def _ae_samples(model, test_images, n, generator):
    """AE has no prior: decode draws from a diagonal Gaussian fitted to the test codes."""
    codes = model.encode(test_images).float()
    mean, std = codes.mean(dim=0), codes.std(dim=0) if codes.shape[0] > 1 else torch.ones_like(codes[0])
    z = mean + std * torch.randn((n, *codes.shape[1:]), generator=generator, device=codes.device)
    return model.decode(z.to(test_images.dtype))


@torch.no_grad()
def write_images(out_dir, model, test_images, is_vae, seed):
    """reconstructions.png (rows of originals over their reconstructions) and samples.png."""
    model.eval()
    shape = tuple(test_images.shape[1:])
    scale = _image_scale(shape)
    originals = test_images[:32]
    recon = model.reconstruct(originals).float().clamp(0, 1).reshape(originals.shape)
    rows = [t for k in range(0, originals.shape[0], 8) for t in (originals[k : k + 8], recon[k : k + 8])]
    grid = images.image_grid(torch.cat(rows).cpu(), ncol=8, scale=scale)
    images.write_png(os.path.join(out_dir, "reconstructions.png"), grid)
    generator = torch.Generator(test_images.device).manual_seed(seed)
    samples = model.sample(64, generator=generator) if is_vae else _ae_samples(model, test_images, 64, generator)
    grid = images.image_grid(samples.float().clamp(0, 1).reshape(64, *shape).cpu(), ncol=8, scale=scale)
    images.write_png(os.path.join(out_dir, "samples.png"), grid)


def write_loss_curve(path, step_losses, epochs, steps_per_epoch, loss_name):
    steps = range(1, len(step_losses) + 1)
    mid_epoch = [(e["epoch"] - 0.5) * steps_per_epoch for e in epochs]  # an epoch's mean training loss
    end_epoch = [e["epoch"] * steps_per_epoch for e in epochs]  # the model evaluated after the epoch
    series = [
        ("train (step)", list(steps), step_losses, 1),
        ("train (epoch)", mid_epoch, [e["train_loss"] for e in epochs], 3),
        ("test (epoch)", end_epoch, [e["test_loss"] for e in epochs], 3),
    ]
    curve = [e["train_loss"] for e in epochs] + [e["test_loss"] for e in epochs]
    tail = step_losses[len(step_losses) // 20 :] or step_losses  # skip the first steps' huge losses
    y_range = (min(curve + tail), max(max(curve), sorted(tail)[int(0.98 * (len(tail) - 1))]))
    canvas = images.line_plot(series, title=loss_name, xlabel="step", y_range=y_range)
    images.write_png(path, canvas)


@torch.no_grad()
def final_metrics(args, model, test_images, device):
    """IWAE log p(x) estimate on the first --iwae-samples test images (VAE only)."""
    if args.model != "vae" or args.iwae_k == 0:
        return {}
    model.eval()
    generator = torch.Generator(device).manual_seed(args.seed + 2)
    x = test_images[: args.iwae_samples].to(device)
    log_px = torch.cat([model.log_likelihood(chunk, args.iwae_k, generator=generator) for chunk in x.split(256)])
    return {"test_log_px_iwae": log_px.mean().item(), "iwae_k": args.iwae_k, "iwae_samples": x.shape[0]}


def save_checkpoint(path, args, config, model, optimizer, epochs_done):
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epochs": epochs_done,
            "args": {k: v for k, v in vars(args).items()},
        },
        path,
    )


# --------------------------------------------------------------------------- main


def _log(args, procs, text):
    if procs.is_main and not args.quiet:
        print(text, flush=True)


def _epoch_line(epoch, epochs, train, test, beta, seconds, is_vae):
    line = f"epoch {epoch}/{epochs}  train loss {train['loss']:.4f}"
    if is_vae:
        line += f" (recon {train['recon']:.4f}, kl {train['kl']:.4f}, beta {beta:.3g})"
    line += f"  test {'-elbo' if is_vae else 'loss'} {test['loss']:.4f}  {seconds:.1f}s"
    return line


def run(args, procs):
    started = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_set, test_set = load_data(args)
    config = model_config(args, train_set.sample_shape)
    model = build_model(config)
    init_output_bias(model, train_set.images, config)
    model = model.to(procs.device)
    if procs.distributed:
        model = DistributedDataParallel(model, device_ids=[procs.device] if procs.device.type == "cuda" else None)
    train_images = _on_device(train_set.images, procs.device)
    test_images = test_set.images.to(procs.device)
    trainer = Trainer(args, procs, model, train_images)
    _log(args, procs, _describe(args, procs, train_set, test_set, _unwrap(model)))
    progress = Progress(enabled=procs.is_main and not args.quiet)
    epochs = []
    for epoch in range(args.epochs):
        epoch_start = time.perf_counter()
        train = _means(trainer.train_epoch(epoch, progress))
        test = _means(trainer.evaluate(test_images))
        progress.clear()
        seconds = time.perf_counter() - epoch_start
        beta = _unwrap(model).beta if trainer.is_vae else 0.0
        epochs.append(_epoch_record(epoch + 1, train, test, beta, seconds))
        _log(args, procs, _epoch_line(epoch + 1, args.epochs, train, test, beta, seconds, trainer.is_vae))
    train_seconds = time.perf_counter() - started
    if procs.distributed:
        dist.barrier()
    if not procs.is_main:
        return 0
    return _finish(args, procs, config, trainer, epochs, test_images, train_seconds, started, train_set)


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


def _finish(args, procs, config, trainer, epochs, test_images, train_seconds, started, train_set):
    import vae_ext

    out_dir = args.out or default_out_dir()
    os.makedirs(out_dir, exist_ok=True)
    model = _unwrap(trainer.model)
    save_checkpoint(os.path.join(out_dir, "checkpoint.pt"), args, config, model, trainer.optimizer, len(epochs))
    final = final_metrics(args, model, test_images, procs.device)
    final.update({"test_loss": epochs[-1]["test_loss"], "train_loss": epochs[-1]["train_loss"]})
    written = ["checkpoint.pt", "metrics.json", "loss_curve.png"]
    if _is_image_shape(train_set.sample_shape):
        write_images(out_dir, model, test_images, trainer.is_vae, args.seed)
        written += ["reconstructions.png", "samples.png"]
    steps_per_epoch = max(1, len(trainer.step_losses) // max(len(epochs), 1))
    loss_name = "negative elbo (nats)" if trainer.is_vae else f"{args.ae_loss} loss"
    write_loss_curve(os.path.join(out_dir, "loss_curve.png"), trainer.step_losses, epochs, steps_per_epoch, loss_name)
    metrics = {
        "config": config,
        "args": vars(args),
        "data": {"name": train_set.name, "train": len(train_set), "test": int(test_images.shape[0])},
        "device": str(procs.device),
        "world_size": procs.world_size,
        "epochs": epochs,
        "step_losses": trainer.step_losses,
        "final": final,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "build_info": vae_ext.build_info(),
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    summary = f"final: test {'-elbo' if trainer.is_vae else 'loss'} {final['test_loss']:.4f}"
    if "test_log_px_iwae" in final:
        summary += f", test log p(x) >= {final['test_log_px_iwae']:.4f} (IWAE, k={final['iwae_k']})"
    print(f"{summary}; {train_seconds:.1f}s training; wrote {', '.join(written)} to {out_dir}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        procs = Processes(args.device)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return run(args, procs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        procs.close()


if __name__ == "__main__":
    sys.exit(main())
