"""The training-step table, as markdown, from a result document (so saved files render too)."""

from __future__ import annotations


def _ms(row):
    if row is None:
        return "-"
    if row.get("error"):
        return "error"
    spread = row["round_spread"] * 100
    return f"{row['median_ms']:.4g} ±{spread:.0f}%"


def _mb(row):
    return "-" if row is None or row.get("saved_bytes") is None else f"{row['saved_bytes'] / 1e6:.3g}"


def _peak(row):
    return "-" if row is None or row.get("peak_bytes") is None else f"{row['peak_bytes'] / 1e6:.4g}"


def _size(row):
    latent = "×".join(map(str, row["latent_shape"]))
    sample = "×".join(map(str, row["sample"]))
    return f"B={row['batch']}, {sample} → {latent}"


HEADER = (
    "| model | size | step | eager latent ms | vae_ext ms | free latent ms | vae_ext / eager (rounds) | verdict "
    "| latent cost removed | saved for backward MB (eager / vae_ext / free) | peak MB (eager / vae_ext / free) |"
)


def render_markdown(report) -> str:
    rows = {(r["model"], r["mode"], r["latent"]): r for r in report["results"]}
    lines = [HEADER, "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    comparisons = {(c["model"], c["mode"]): c for c in report["comparisons"]}
    for model, mode in dict.fromkeys((r["model"], r["mode"]) for r in report["results"]):
        eager, ours, free = (rows.get((model, mode, name)) for name in ("eager", "vae_ext", "free"))
        c = comparisons.get((model, mode))
        if c is None:
            ratio = verdict = share = "-"
        else:
            ratio = f"{c['vae_ext_over_eager']:.3f} ({c['round_ratio_min']:.2f}–{c['round_ratio_max']:.2f})"
            verdict = c["verdict"]
            share = "-" if c.get("share_removed") is None else f"{c['share_removed'] * 100:.0f}%"
            if c.get("latent_cost_above_noise") is False:
                share = "layer cost within noise"
        step = "torch.compile" if mode == "compile" else "eager"
        lines.append(
            f"| {model} | {_size(eager or ours)} | {step} | {_ms(eager)} | {_ms(ours)} | {_ms(free)} | {ratio} "
            f"| {verdict} | {share} | {_mb(eager)} / {_mb(ours)} / {_mb(free)} "
            f"| {_peak(eager)} / {_peak(ours)} / {_peak(free)} |"
        )
    return "\n".join(_summary(report) + [""] + lines + [""] + [f"* {why}" for why in report.get("skipped", [])])


def _summary(report):
    load = report.get("load_average_start"), report.get("load_average_end")
    load_text = " → ".join("-" if x is None else "/".join(f"{v:.2f}" for v in x) for x in load)
    settings = report["settings"]
    return [
        f"device: {report['device']}  ",
        f"torch {report['torch']}, vae_ext {report['vae_ext']} ({report['backend']}), diffusers "
        f"{report.get('diffusers') or 'not installed'}, commit {report['commit'][:12]}"
        + (" (uncommitted changes)" if report.get("dirty") else "")
        + "  ",
        f"sizes {settings['sizes']}: {settings['rounds']} rounds × {settings['steps_per_round']} steps per impl "
        f"after {settings['warmup']} warm-up steps, {settings['clock']} clock; "
        f"load average (1/5/15 min) {load_text}; {report['wall_s']:.0f} s  ",
        "step = zero_grad, loss, backward, Adam.step; ms = median step, ±: slowest minus fastest round median over "
        "the median; vae_ext / eager: median of the per-round ratios, their range in brackets; verdict: every "
        "round slower / faster, else within noise; latent cost removed = (eager − vae_ext) / (eager − free)",
    ]
