"""Command line: ``python -m vae_ext {train,bench,info} ...`` (``vae-ext`` once installed)."""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = {
    "train": "train a VAE or an AE; writes a checkpoint, metrics and figures",
    "bench": "time eager, torch.compile and vae_ext against a device copy",
    "info": "print how this install was built (compiled CPU / CUDA kernels)",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="python -m vae_ext",
        description="vae_ext: fused reparameterization and Gaussian KL kernels, and their tools.",
        epilog="'python -m vae_ext COMMAND --help' lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"vae_ext {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        # The commands parse their own options (their parsers live with them): add_help=False
        # lets --help through to them.
        commands.add_parser(name, help=summary, description=summary, add_help=name == "info")
    return parser


def info() -> int:
    import vae_ext

    print(json.dumps(vae_ext.build_info(), indent=2))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "train":
        from .train import main as run
    elif args.command == "bench":
        from .bench import main as run
    else:
        if rest:
            print(f"python -m vae_ext info: takes no arguments, got {' '.join(rest)}", file=sys.stderr)
            return 2
        return info()
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
