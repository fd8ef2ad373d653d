"""Command line: ``python -m vae_ext {train,bench,info} ...``."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m vae_ext", description=__doc__)
    parser.add_argument("command", choices=("train", "bench", "info"), help="what to run")
    args, rest = parser.parse_known_args(argv[:1])
    if args.command == "train":
        from .train import main as run
    elif args.command == "bench":
        from .bench import main as run
    else:
        import vae_ext

        print(json.dumps(vae_ext.build_info(), indent=2))
        return 0
    return run(argv[1:] + rest)


if __name__ == "__main__":
    sys.exit(main())
