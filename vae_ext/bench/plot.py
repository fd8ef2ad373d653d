"""GB/s against problem size, one line per impl, one panel per (pass, dtype, eps), from a result
document (``python -m vae_ext bench ... --plot PNG``). The copy line is the same device copy in
every panel of a dtype."""

from __future__ import annotations

import math

from ..tools import plotting
from .cases import IMPLS, PASSES

MARKERS = {"eager": "o", "compile": "s", "vae_ext": "D", "fresh": "^", "copy": "."}


def panels(results: list[dict], op: str):
    """Sorted (dtype, eps) columns and the passes present for ``op``."""
    rows = [r for r in results if r["op"] == op]
    columns = sorted({(r["dtype"], r["eps"]) for r in rows})
    passes = [p for p in PASSES if any(r["pass"] == p for r in rows)]
    return columns, passes


def series(results: list[dict], impl: str, op: str, pass_name: str, dtype: str, eps: str):
    """(numel, gbps) points of one line, by size."""
    if impl == "copy":
        rows = [r for r in results if r["impl"] == "copy" and r["dtype"] == dtype]
    else:
        wanted = {"impl": impl, "op": op, "pass": pass_name, "dtype": dtype, "eps": eps}
        rows = [r for r in results if all(r[k] == v for k, v in wanted.items())]
    return sorted((math.prod(r["shape"]), r["gbps"]) for r in rows if r.get("gbps"))


def _panel(ax, results, op, pass_name, dtype, eps):
    values = []
    for impl in IMPLS:
        points = series(results, impl, op, pass_name, dtype, eps)
        if points:
            style = "--" if impl in ("copy", "fresh") else "-"
            color = plotting.IMPL_COLORS.get(impl, "tab:gray")  # the floors' lines: dashed
            ax.plot(*zip(*points), style, marker=MARKERS[impl], color=color, label=impl, ms=4)
            values += [gbps for _, gbps in points]
    ax.set_xscale("log")
    plotting.log_y(ax, values)
    ax.set_title(f"{pass_name}, {dtype}, eps {eps}", fontsize=9)
    ax.set_xlabel("elements N", fontsize=8)
    ax.set_ylabel("GB/s", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)


def plot_report(report: dict, op: str, path) -> object:
    """Writes the plot of ``op`` to ``path``; returns the Figure. ValueError when the report has no rows of op."""
    results = report["results"]
    columns, passes = panels(results, op)
    if not columns:
        raise ValueError(f"--plot: the results hold no rows of op {op!r}")
    figure = plotting.new_figure(4.2 * len(columns), 3.4 * len(passes))
    axes = figure.subplots(len(passes), len(columns), squeeze=False)
    for i, pass_name in enumerate(passes):
        for j, (dtype, eps) in enumerate(columns):
            _panel(axes[i][j], results, op, pass_name, dtype, eps)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    figure.suptitle(
        f"{op}: GB/s = model bytes / median time\n{report['device']}, commit {report['commit'][:12]}", fontsize=10
    )
    plotting.save(figure, path)
    return figure
