"""Plots GB/s against problem size, one line per impl, from a `python -m vae_ext bench` result file.

    python benchmarks/plot.py RESULT.json [-o PLOT.png] [--op reparameterize_kl]

One panel per (pass, dtype, eps); the copy line is the same device copy in every panel. Needs
matplotlib; without it the script says so and exits 0 (plots are optional).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

IMPL_STYLES = {"eager": "o-", "compile": "s-", "vae_ext": "D-", "copy": "k.--"}
PASSES = ("fwd", "bwd", "fwd+bwd")


def load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def panels(results, op):
    """Sorted (dtype, eps) columns and the passes present for ``op``."""
    rows = [r for r in results if r["op"] == op]
    columns = sorted({(r["dtype"], r["eps"]) for r in rows})
    passes = [p for p in PASSES if any(r["pass"] == p for r in rows)]
    return columns, passes


def series(results, impl, op, pass_name, dtype, eps):
    """(numel, gbps, shape label) points of one line, by size."""
    if impl == "copy":
        rows = [r for r in results if r["impl"] == "copy" and r["dtype"] == dtype]
    else:
        wanted = {"impl": impl, "op": op, "pass": pass_name, "dtype": dtype, "eps": eps}
        rows = [r for r in results if all(r[k] == v for k, v in wanted.items())]
    points = [(math.prod(r["shape"]), r["gbps"], "x".join(map(str, r["shape"]))) for r in rows if r.get("gbps")]
    return sorted(points)


def draw(report, op, output, plt):
    results = report["results"]
    columns, passes = panels(results, op)
    if not columns:
        raise SystemExit(f"plot.py: no rows for op {op!r}")
    figure, axes = plt.subplots(
        len(passes), len(columns), figsize=(4.2 * len(columns), 3.4 * len(passes)), squeeze=False
    )
    for i, pass_name in enumerate(passes):
        for j, (dtype, eps) in enumerate(columns):
            draw_panel(axes[i][j], results, op, pass_name, dtype, eps)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"{op}: GB/s (model bytes / median time)\n{report['device']}, commit {report['commit'][:12]}")
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)


def draw_panel(ax, results, op, pass_name, dtype, eps):
    for impl, style in IMPL_STYLES.items():
        points = series(results, impl, op, pass_name, dtype, eps)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=impl, markersize=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"{pass_name}, {dtype}, eps {eps}", fontsize=9)
    ax.set_xlabel("elements (N)", fontsize=8)
    ax.set_ylabel("GB/s", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", help="a result JSON from python -m vae_ext bench --json")
    parser.add_argument("-o", "--output", help="PNG path (default: the JSON's path with .png)")
    parser.add_argument("--op", default="reparameterize_kl", help="which op to plot (default reparameterize_kl)")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed; no plot written", file=sys.stderr)
        return 0
    output = Path(args.output) if args.output else Path(args.result).with_suffix(".png")
    draw(load(args.result), args.op, output, plt)
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
