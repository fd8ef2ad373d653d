"""The train command's arguments and its entry point."""

from __future__ import annotations

import argparse
import sys

import torch

from ..losses import AE_LOSSES, LIKELIHOODS
from ..schedules import WARMUPS

DESCRIPTION = "Train a VAE or an AE on the built-in shapes, a real data set or a data file."
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_parser(prog: str = "python -m vae_ext train") -> argparse.ArgumentParser:
    from . import __doc__ as package_doc

    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION + "\n\n" + package_doc.split("\n\n", 1)[1],
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--model", choices=("vae", "ae"), default="vae", help="variational or plain autoencoder")
    p.add_argument(
        "--data",
        default="shapes",
        help="shapes (built in), digits (scikit-learn's, no download), mnist or fashion-mnist (downloaded "
        "once into --data-dir), or a .npy / .pt / IDX file or a folder of MNIST-style IDX files",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="cache folder for downloaded data sets (default $VAE_EXT_DATA, else ~/.cache/vae_ext)",
    )
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
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default="none", help="autocast dtype")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (ε then comes from torch's default generator, seeded by --seed)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the data, the model and the sampling")
    p.add_argument("--iwae-k", type=int, default=64, help="importance samples for the test log p(x) (0: skip)")
    p.add_argument("--iwae-samples", type=int, default=500, help="test images for the log p(x) estimate")
    p.add_argument("--out", default=None, help="output folder (default runs/<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    p.add_argument(
        "--progress-every",
        type=float,
        default=5.0,
        help="seconds between progress lines when stderr is not a terminal (a terminal gets a tqdm bar)",
    )
    return p


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, and the description's paragraphs as written."""


def parse_args(argv) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
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
        (args.progress_every >= 0, "--progress-every must be >= 0"),
    )
    for ok, message in checks:
        if not ok:
            parser.error(message)
    args.hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    return args


def main(argv=None) -> int:
    """Runs the train command; 0 on success, 2 for bad data or devices (argparse exits for bad options)."""
    from .distributed import Processes
    from .run import run

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
