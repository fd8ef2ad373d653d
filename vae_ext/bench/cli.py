"""The bench command's options and its entry point."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .cases import DTYPES, EPS_MODES, IMPLS, PASSES, SIZE_SETS
from .report import save_path, write_json
from .rows import add_derived_fields
from .runner import Config, run_benchmark
from .suites import OPS, suites
from .tables import errors_of, render_markdown, render_text
from .timing import TimingSettings

DESCRIPTION = "Time eager PyTorch, torch.compile and vae_ext against a device copy (docs/design.md section 6)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vae_ext bench",
        description=DESCRIPTION,
        epilog=(
            "'python -m vae_ext bench step --help': the training-step benchmark; "
            "'python -m vae_ext bench posterior --help': the diffusers posterior benchmark."
        ),
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--sizes", default="quick", help="quick, full, gpu, or shapes like 128x32,64x16x64x64 (default quick)"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma list of " + ", ".join(DTYPES))
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    parser.add_argument(
        "--ops",
        default="reparameterize_kl",
        help="comma list of ops (" + ", ".join(OPS) + "), suites (" + ", ".join(suites()) + "), or all",
    )
    parser.add_argument("--passes", default=",".join(PASSES), help="comma list of " + ", ".join(PASSES))
    parser.add_argument("--eps", default=",".join(EPS_MODES), help="comma list of " + ", ".join(EPS_MODES))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch.get_num_threads())")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls after the first (default 5)")
    parser.add_argument("--repeats", type=int, default=10, help="fewest timed calls (default 10)")
    parser.add_argument("--max-repeats", type=int, default=1000, help="most timed calls (default 1000)")
    parser.add_argument(
        "--min-time", type=float, default=0.2, help="timed calls add up to about this many seconds (default 0.2)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="CPU: wall (elapsed) or cpu (this process's CPU time; steadier on a shared machine with --threads 1)",
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    parser.add_argument("--json", metavar="PATH", help="write the result JSON here")
    parser.add_argument("--save", action="store_true", help="write it as benchmarks/results/<device>-<commit>.json")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--table", metavar="FILE.json", help="print an existing result file as markdown (rows of --passes); no run"
    )
    parser.add_argument("--plot", metavar="PNG", help="plot GB/s against size per impl (needs matplotlib)")
    parser.add_argument("--plot-op", default=None, help="the op to plot (default: the first op of the results)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _parse_list(parser, text, allowed, option):
    items = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        parser.error(f"{option}: expected a comma list of {', '.join(allowed)}; got {text!r}")
    return items


def _parse_ops(parser, text):
    groups = {"all": tuple(OPS), **suites()}
    items = _parse_list(parser, text, (*OPS, *groups), "--ops")
    return tuple(dict.fromkeys(op for item in items for op in groups.get(item, (item,))))


def _parse_sizes(parser, text):
    if text in SIZE_SETS:
        return SIZE_SETS[text]
    try:
        shapes = tuple(tuple(int(d) for d in item.split("x")) for item in text.split(",") if item.strip())
    except ValueError:
        shapes = ()
    if not shapes or any(len(s) < 2 or min(s) < 1 for s in shapes):
        parser.error(f"--sizes: expected {', '.join(SIZE_SETS)} or shapes like 128x32,64x16x64x64; got {text!r}")
    return shapes


def make_config(parser, args) -> Config:
    impls = _parse_list(parser, args.impls, IMPLS, "--impls")
    if args.no_compile:
        impls = tuple(impl for impl in impls if impl != "compile")
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    if threads < 1 or args.warmup < 0 or args.repeats < 1 or args.max_repeats < args.repeats or args.min_time < 0:
        parser.error("--threads and --repeats must be >= 1, --warmup and --min-time >= 0, --max-repeats >= --repeats")
    if args.clock == "cpu" and args.device == "cuda":
        parser.error("--clock cpu: CUDA rows are timed with CUDA events")
    return Config(
        device=args.device,
        shapes=_parse_sizes(parser, args.sizes),
        dtypes=tuple(DTYPES[name] for name in _parse_list(parser, args.dtypes, tuple(DTYPES), "--dtypes")),
        impls=impls,
        ops=_parse_ops(parser, args.ops),
        passes=_parse_list(parser, args.passes, PASSES, "--passes"),
        eps_modes=_parse_list(parser, args.eps, EPS_MODES, "--eps"),
        threads=threads,
        timing=TimingSettings(args.warmup, args.repeats, args.max_repeats, args.min_time),
        quiet=args.quiet,
        clock=args.clock,
    )


def _plot(report, args) -> int:
    from .plot import plot_report

    ops = [r["op"] for r in report["results"] if r["op"] != "copy"]
    op = args.plot_op or (ops[0] if ops else "")
    try:
        plot_report(report, op, args.plot)
    except (ImportError, ValueError) as error:
        print(f"bench: no plot written: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Runs the bench command; 0, 1 when an eager / vae_ext / copy row (or the plot) failed, 2 for bad arguments.

    ``bench posterior ...`` runs the posterior benchmark instead (diffusers' DiagonalGaussianDistribution
    against vae_ext's: time and bytes saved for backward; vae_ext/bench/posterior.py), and
    ``bench step ...`` the training-step benchmark (vae_ext/bench/step/).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["posterior"]:
        from .posterior import main as posterior_main

        return posterior_main(argv[1:])
    if argv[:1] == ["step"]:
        from .step import main as step_main

        return step_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.table:
            report = json.loads(Path(args.table).read_text(encoding="utf-8"))
            passes = _parse_list(parser, args.passes, PASSES, "--passes")  # --passes filters the rows shown
            report["results"] = [r for r in report["results"] if r["impl"] == "copy" or r["pass"] in passes]
            add_derived_fields(report["results"])
            print(render_markdown(report))
            return _plot(report, args) if args.plot else 0
        config = make_config(parser, args)
    except SystemExit as exit_request:  # argparse's way of reporting bad arguments or --help
        return exit_request.code if isinstance(exit_request.code, int) else 2
    if config.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    report = run_benchmark(config)
    print(render_markdown(report) if args.markdown else render_text(report))
    if args.json:
        write_json(report, args.json)
    if args.save:
        write_json(report, save_path(report))
    status = 1 if errors_of(report) else 0
    return max(status, _plot(report, args)) if args.plot else status
