"""The result table, as aligned text or markdown (from a result document, so old files render too)."""

from __future__ import annotations

from .cases import KERNEL_IMPLS, shape_text
from .rows import case_key as _case_key
from .rows import ratio as _ratio


def _fmt(value, spec, suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table_cells(results):
    """Header and one row of cells per (op, pass, eps, dtype, shape)."""
    impls = [impl for impl in KERNEL_IMPLS if any(r["impl"] == impl for r in results)]
    has_copy = any(r["impl"] == "copy" for r in results)
    has_fresh = any(r["impl"] == "fresh" for r in results)
    header = ["op", "pass", "eps", "dtype", "shape"]
    for impl in impls:
        header += [f"{impl} ms", f"{impl} GB/s"]
    extras = [
        ("copy GB/s", has_copy),
        ("vae_ext/copy", has_copy and "vae_ext" in impls),
        ("fresh GB/s", has_fresh),
        ("vae_ext/fresh", has_fresh and "vae_ext" in impls),
        ("vs eager", "eager" in impls and "vae_ext" in impls),
        ("vs compile", "compile" in impls and "vae_ext" in impls),
    ]
    header += [name for name, shown in extras if shown]
    by_key = {}
    for row in results:
        if row["impl"] != "copy":
            by_key.setdefault(_case_key(row), {})[row["impl"]] = row
    copy_gbps = {(r["dtype"], tuple(r["shape"])): r["gbps"] for r in results if r["impl"] == "copy"}
    lines = [_cells(key, by_key[key], impls, copy_gbps, extras) for key in by_key]
    return header, lines


def _cells(key, rows, impls, copy_gbps, extras):
    op, pass_name, eps, dtype, shape = key
    cells = [op, pass_name, eps, dtype, shape_text(shape)]
    for impl in impls:
        row = rows.get(impl)
        if row is not None and row.get("error"):
            cells += ["error", "error"]
        else:
            cells += [_fmt(row and row["median_ms"], ".4g"), _fmt(row and row["gbps"], ".3g")]
    ours = rows.get("vae_ext") or {}
    copy = copy_gbps.get((dtype, shape))
    fresh = (rows.get("fresh") or {}).get("gbps")
    values = {
        "copy GB/s": _fmt(copy, ".3g"),
        "vae_ext/copy": _fmt(_ratio(ours.get("gbps"), copy), ".2f"),
        "fresh GB/s": _fmt(fresh, ".3g"),
        "vae_ext/fresh": _fmt(_ratio(ours.get("gbps"), fresh), ".2f"),
        "vs eager": _fmt(_ratio((rows.get("eager") or {}).get("median_ms"), ours.get("median_ms")), ".2f", "x"),
        "vs compile": _fmt(_ratio((rows.get("compile") or {}).get("median_ms"), ours.get("median_ms")), ".2f", "x"),
    }
    return cells + [values[name] for name, shown in extras if shown]


def _summary_lines(report):
    info = report.get("build_info") or {}
    backend = f" ({info['backend']})" if "backend" in info else ""
    load = [report.get(key) for key in ("load_average_start", "load_average_end")]
    load_text = " → ".join("/".join(f"{v:.2f}" for v in x) for x in load if x)
    return [
        f"device: {report['device']}" + (f"; load average (1/5/15 min) {load_text}" if load_text else ""),
        f"torch {report['torch']}, vae_ext {report['vae_ext']}{backend}, commit {report['commit'][:12]}"
        + (" (uncommitted changes)" if report.get("dirty") else ""),
        (
            "GB/s = model bytes / median time; vae_ext/copy, vae_ext/fresh = vae_ext GB/s over copy's"
            " (y.copy_(x)) and over the fresh-output floor's (the same traffic as elementwise ops allocating outputs);"
            " vs eager / vs compile = their median ms over vae_ext's"
        ),
    ]


def render_text(report):
    header, lines = table_cells(report["results"])
    numeric = [i >= 5 for i in range(len(header))]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]

    def line(cells):
        return "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric))

    body = [line(header), line(["-" * w for w in widths])] + [line(cells) for cells in lines]
    return "\n".join(_summary_lines(report) + [""] + body)


def render_markdown(report):
    header, lines = table_cells(report["results"])
    align = ["---" if i < 5 else "---:" for i in range(len(header))]
    rows = [header, align] + lines
    table = ["| " + " | ".join(cells) + " |" for cells in rows]
    summary = [text + "  " for text in _summary_lines(report)]
    return "\n".join(summary + [""] + table)


def errors_of(report, impls=("eager", "vae_ext", "copy")):
    return [r for r in report["results"] if r.get("error") and r["impl"] in impls]
