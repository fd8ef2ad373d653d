"""The train command's arguments and its entry point."""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

from ..losses import AE_LOSSES, LIKELIHOODS
from ..schedules import WARMUPS
from .amp import AMP_DTYPES

DESCRIPTION = "Train a VAE or an AE on the built-in shapes, a real data set or a data file."


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


def _float_where(ok, what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = f"number {what}"
    return parse


def widths(text: str) -> list[int]:
    """--hidden: comma-separated positive layer widths."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("needs at least one width, e.g. 512,256")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths must be integers separated by commas, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return values


def device(text: str) -> str:
    """--device: auto, or what torch.device accepts (cpu, cuda, cuda:N, ...)."""
    if text != "auto":
        try:
            torch.device(text)
        except (RuntimeError, ValueError):
            raise argparse.ArgumentTypeError(f"not a device: {text!r} (auto, cpu, cuda or cuda:N)") from None
    return text


positive_int = _int_at_least(1)
positive = _float_where(lambda v: v > 0, "> 0")
non_negative = _float_where(lambda v: v >= 0, ">= 0")


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
    p.add_argument("--shapes", type=_int_at_least(2), default=20000, help="number of built-in shape images")
    p.add_argument("--size", type=positive_int, default=32, help="side of the built-in shape images")
    p.add_argument("--limit", type=_int_at_least(2), default=None, help="use only the first N samples (quick runs)")
    p.add_argument(
        "--test-fraction", type=_float_where(lambda v: 0 < v < 1, "in (0, 1)"), default=0.1, help="held-out fraction"
    )
    p.add_argument("--arch", choices=("mlp", "conv"), default="mlp", help="encoder / decoder networks")
    p.add_argument("--hidden", type=widths, default="512,256", help="MLP hidden widths, encoder order")
    p.add_argument("--latent-dim", type=positive_int, default=10, help="latent dimensions L")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli", help="VAE p(x|z)")
    p.add_argument("--ae-loss", choices=AE_LOSSES, default="mse", help="AE reconstruction loss")
    p.add_argument("--prior", choices=("standard", "learnable"), default="standard", help="VAE prior p(z)")
    p.add_argument("--beta", type=non_negative, default=1.0, help="KL weight (after warm-up)")
    p.add_argument("--warmup", choices=WARMUPS, default="none", help="KL warm-up schedule for beta")
    p.add_argument("--free-bits", type=non_negative, default=0.0, help="free bits per latent dimension (nats)")
    p.add_argument("--logvar-clamp", type=positive, default=None, help="clamp logvar to [-C, C]")
    p.add_argument("--epochs", type=positive_int, default=20, help="passes over the training set")
    p.add_argument("--batch-size", type=positive_int, default=64, help="per process")
    p.add_argument("--lr", type=positive, default=1e-3, help="Adam learning rate")
    p.add_argument("--device", type=device, default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (None: torch's choice)")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default="none", help="autocast dtype")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (ε then comes from torch's default generator, seeded by --seed)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the data, the model and the sampling")
    p.add_argument(
        "--iwae-k", type=_int_at_least(0), default=64, help="importance samples for the test log p(x) (0: skip)"
    )
    p.add_argument("--iwae-samples", type=positive_int, default=500, help="test images for the log p(x) estimate")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default runs/<timestamp>): checkpoint.pt and metrics.json after every epoch, "
        "the figures at the end",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint; options left off come from the checkpoint",
    )
    p.add_argument(
        "--figures",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the PNG figures at the end (they need matplotlib; --no-figures skips them)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    p.add_argument(
        "--progress-every",
        type=non_negative,
        default=5.0,
        help="seconds between progress lines when stderr is not a terminal (a terminal gets a tqdm bar)",
    )
    return p


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, and the description's paragraphs as written."""


def parse_args(argv) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume and args.out is None:
        parser.error("--resume needs --out: the folder of the run to continue")
    return args


def given_options(argv) -> set:
    """The options written on the command line ``argv`` (not left at their defaults)."""
    parser = build_parser()
    unset = object()
    parser.set_defaults(**dict.fromkeys(vars(parser.parse_args([])), unset))
    return {key for key, value in vars(parser.parse_args(argv)).items() if value is not unset}


def main(argv=None) -> int:
    """Runs the train command. Exit status: 0 done, 1 diverged, 2 bad options (argparse), data,
    device or checkpoint, 130 / 143 stopped by SIGINT / SIGTERM (a checkpoint to --resume from)."""
    from .checkpoint import CHECKPOINT_NAME, read_checkpoint
    from .distributed import Processes
    from .resume import resumed_args
    from .run import run

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    checkpoint = None
    try:
        if args.resume:
            path = os.path.join(args.out, CHECKPOINT_NAME)
            checkpoint = read_checkpoint(path)
            args = resumed_args(args, given_options(argv), checkpoint, path)
        procs = Processes(args.device)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return run(args, procs, checkpoint)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training set its handlers up: nothing to save yet
        print("stopped by SIGINT before training started: nothing saved", file=sys.stderr)
        return 130
    finally:
        procs.close()
