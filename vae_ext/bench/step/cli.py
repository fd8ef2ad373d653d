"""``python -m vae_ext bench step``: the training-step benchmark's options and entry point."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

import vae_ext

from ..report import device_string, git_state, save_path
from .latents import LATENTS
from .measure import CLOCKS
from .models import MODELS
from .run import StepConfig, run_step_bench
from .table import render_markdown

DESCRIPTION = (
    "Time VAE training steps (forward, loss, backward, Adam) with the latent layer written in eager PyTorch, "
    "with vae_ext and with a free layer (z = mu, KL 0), each eager and under torch.compile."
)


def _list(text, allowed, option):
    items = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not items or any(item not in allowed for item in items):
        raise argparse.ArgumentTypeError(f"{option}: expected a comma list of {', '.join(allowed)}; got {text!r}")
    return items


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m vae_ext bench step", description=DESCRIPTION)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", choices=("quick", "full"), default="quick")
    parser.add_argument(
        "--models", type=lambda t: _list(t, tuple(MODELS), "--models"), default=tuple(MODELS), help=", ".join(MODELS)
    )
    parser.add_argument("--latents", type=lambda t: _list(t, LATENTS, "--latents"), default=LATENTS)
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of turns (default 5)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per impl per round (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch.get_num_threads())")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (CPU only; steadier on a shared CPU with --threads 1)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the result JSON here")
    parser.add_argument("--markdown", metavar="PATH", help="write the markdown table here too")
    parser.add_argument(
        "--save", action="store_true", help="write benchmarks/results/step-<device>-<commit>.json and its .md"
    )
    parser.add_argument("--table", metavar="FILE.json", help="print an existing result file as markdown; no run")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def make_report(config, run, git) -> dict:
    """``git``: git_state() when the run started."""
    commit, dirty = git
    try:
        import diffusers

        diffusers_version = diffusers.__version__
    except ImportError:
        diffusers_version = None
    report = {
        "benchmark": "step",
        "device": device_string(config.device, run["threads"] or 1),
        "torch": torch.__version__,
        "vae_ext": vae_ext.__version__,
        "backend": vae_ext.build_info()["backend"],
        "diffusers": diffusers_version,
        "commit": commit,
        "dirty": dirty,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "device_type": config.device,
        **run,
    }
    if config.device == "cuda":
        report["cuda"] = torch.version.cuda
    return report


def main(argv=None) -> int:
    """0, 1 when an eager or vae_ext row failed, 2 for bad arguments."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.rounds < 2 or args.steps < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
            parser.error("--rounds must be >= 2, --steps and --threads >= 1, --warmup >= 0")
        if args.clock == "cpu" and args.device == "cuda":
            parser.error("--clock cpu: a CUDA step's time is on the GPU; use --clock wall")
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else 2
    if args.table:
        print(render_markdown(json.loads(Path(args.table).read_text(encoding="utf-8"))))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench step: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    config = StepConfig(
        device=args.device,
        sizes=args.sizes,
        models=args.models,
        modes=("eager",) if args.no_compile else ("eager", "compile"),
        latents=args.latents,
        rounds=args.rounds,
        steps_per_round=args.steps,
        warmup=args.warmup,
        threads=args.threads,
        clock=args.clock,
        quiet=args.quiet,
    )
    git = git_state()
    report = make_report(config, run_step_bench(config), git)
    table = render_markdown(report)
    print(table)
    saved = save_path(report, prefix="step-") if args.save else None
    outputs = [(args.json, json.dumps(report, indent=1)), (args.markdown, table)]
    if saved is not None:
        outputs += [(saved, json.dumps(report, indent=1)), (saved.with_suffix(".md"), table)]
    for path, text in outputs:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n", encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    failed = [r for r in report["results"] if r.get("error") and r["mode"] != "compile"]
    return 1 if failed else 0
