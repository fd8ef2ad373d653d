"""The train command's figures: loss curves, reconstructions, samples and the latent space."""

from __future__ import annotations

import torch

from ..tools import plotting


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


TRAVERSAL_STEPS = 9
TRAVERSAL_ROWS = 10


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing running mean over ``window`` steps (the first steps average what there is)."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def _curves(steps: dict, is_vae: bool) -> list[tuple[str, str, list[float]]]:
    """(label, colour key, values) per step: the loss and, for a VAE, its two terms."""
    curves = [("loss (-ELBO with β)" if is_vae else "loss", "loss", steps["loss"])]
    if is_vae:
        kl_term = [loss - recon for loss, recon in zip(steps["loss"], steps["recon"])]
        curves += [("reconstruction", "recon", steps["recon"]), ("β·KL term", "kl", kl_term)]
    return curves


def _per_step_panel(ax, steps: dict, steps_per_epoch: int, is_vae: bool, loss_name: str) -> None:
    n = len(steps["loss"])
    x = list(range(1, n + 1))
    window = max(1, steps_per_epoch // 10)
    values = []
    for label, key, ys in _curves(steps, is_vae):
        color = plotting.COLORS[key]
        ax.plot(x, ys, color=color, linewidth=0.6, alpha=0.3)
        ax.plot(x, _smooth(ys, window), color=color, linewidth=1.6, label=f"{label} (mean of {window} steps)")
        values += ys
    if plotting.wants_log_scale(values):
        plotting.log_y(ax, values)
    for epoch_end in range(steps_per_epoch, n, steps_per_epoch):
        ax.axvline(epoch_end + 0.5, color="0.55", linewidth=0.8, linestyle="--", zorder=0)
    ax.set_xlim(0.5, n + 0.5)
    ax.set_xlabel("step: one training batch (dashed lines: epoch ends)")
    ax.set_ylabel(loss_name)
    top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch))
    top.xaxis.set_major_locator(_integer_locator())
    top.set_xlabel("epoch", labelpad=2)
    betas = steps.get("beta") or []
    if is_vae and betas and min(betas) != max(betas):
        twin = ax.twinx()
        twin.plot(x, betas, color=plotting.COLORS["beta"], linewidth=1.0, linestyle=":", label="β (right axis)")
        twin.set_ylabel("β")
        twin.set_ylim(bottom=0)
        twin.legend(loc="upper center", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _per_epoch_panel(ax, epochs: list[dict], is_vae: bool) -> None:
    x = [e["epoch"] for e in epochs]
    series = [("train loss", "loss", "-", [e["train_loss"] for e in epochs])]
    if is_vae:
        series += [
            ("train reconstruction", "recon", "-", [e["train_recon"] for e in epochs]),
            ("train β·KL term", "kl", "-", [e["train_loss"] - e["train_recon"] for e in epochs]),
            ("test -ELBO (β = 1)", "loss", "--", [e["test_loss"] for e in epochs]),
            ("test reconstruction", "recon", "--", [e["test_recon"] for e in epochs]),
            ("test KL", "kl", "--", [e["test_kl"] for e in epochs]),
        ]
    else:
        series.append(("test loss", "loss", "--", [e["test_loss"] for e in epochs]))
    values = []
    for label, key, style, ys in series:
        ax.plot(x, ys, style, color=plotting.COLORS[key], marker="o", markersize=3, linewidth=1.4, label=label)
        values += ys
    if plotting.wants_log_scale(values, ratio=3.0):
        plotting.log_y(ax, values)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlim(0.5, max(x) + 0.5)
    ax.set_xlabel("epoch")
    ax.set_title("per epoch (train: mean over the epoch; test: after it)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)


def loss_curve(path, steps: dict, epochs: list[dict], steps_per_epoch: int, is_vae: bool, loss_name: str):
    """loss_curve.png: the training loss per step (left) and train / test per epoch (right);
    a VAE's reconstruction and β-weighted KL terms as their own curves. Returns the Figure."""
    figure = plotting.new_figure(12.0, 4.4)
    left, right = figure.subplots(1, 2, width_ratios=(1.35, 1))
    _per_step_panel(left, steps, max(1, steps_per_epoch), is_vae, loss_name)
    _per_epoch_panel(right, epochs, is_vae)
    plotting.save(figure, path)
    return figure


def reconstructions(path, originals: torch.Tensor, recon: torch.Tensor, ncol: int = 8):
    """reconstructions.png: rows of test images, each above its reconstruction, labelled."""
    originals, recon = plotting.to_display(originals), plotting.to_display(recon)
    pairs = (originals.shape[0] + ncol - 1) // ncol
    h, w = originals.shape[1:3]
    figure = plotting.new_figure(1.1 + ncol * 0.9 * w / max(h, w), 2 * pairs * 0.9 * h / max(h, w) + 0.5)
    axes = figure.subplots(2 * pairs, 1, squeeze=False)[:, 0]
    for pair in range(pairs):
        chunk = slice(pair * ncol, (pair + 1) * ncol)
        for row, (label, images) in enumerate((("original", originals), ("reconstruction", recon))):
            ax = axes[2 * pair + row]
            plotting.show_image(ax, plotting.tile(images[chunk], ncol))
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    figure.suptitle("test images and their reconstructions (mean of p(x | z = μ(x)))", fontsize=10)
    plotting.save(figure, path)
    return figure


def samples(path, images: torch.Tensor, title: str, ncol: int = 8):
    """samples.png: a grid of generated images."""
    figure = plotting.new_figure(7.0, 7.3)
    ax = figure.subplots()
    plotting.show_image(ax, plotting.tile(plotting.to_display(images), ncol))
    ax.set_title(title, fontsize=10)
    plotting.save(figure, path)
    return figure


def latent_traversal(path, rows: list[tuple[str, torch.Tensor]], values: list[float], value_label: str):
    """latent_traversal.png: one row per latent dimension, decoded while that coordinate sweeps
    ``values`` and the others stay at the base code. ``rows``: (row label, [steps, C, H, W])."""
    n = len(rows)
    figure = plotting.new_figure(1.6 + 0.75 * len(values), 0.75 * n + 0.9)
    axes = figure.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (label, images) in zip(axes, rows):
        plotting.show_image(ax, plotting.tile(plotting.to_display(images), len(values)))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    last = axes[-1]
    width = last.get_images()[0].get_array().shape[1]
    step = width / len(values)
    last.set_xticks([step * (k + 0.5) for k in range(len(values))], [f"{v:+.1f}" for v in values], fontsize=8)
    last.set_xlabel(value_label, fontsize=9)
    figure.suptitle("latent traversal: one coordinate swept, the others held", fontsize=10)
    plotting.save(figure, path)
    return figure


def latent_scatter(path, codes: torch.Tensor, labels: torch.Tensor | None, label_names: tuple, title: str):
    """latent_scatter.png: 2-d codes of the test images, coloured by class when known."""
    figure = plotting.new_figure(6.2, 5.6)
    ax = figure.subplots()
    codes = codes.detach().float().cpu()
    if labels is None:
        ax.scatter(codes[:, 0].numpy(), codes[:, 1].numpy(), s=4, alpha=0.6)
    else:
        cmap = _class_colors(int(labels.max()) + 1)
        for cls in sorted(set(labels.tolist())):
            mask = labels == cls
            name = label_names[cls] if cls < len(label_names) else str(cls)
            ax.scatter(codes[mask, 0].numpy(), codes[mask, 1].numpy(), s=4, alpha=0.7, color=cmap(cls), label=name)
        ax.legend(fontsize=8, markerscale=3, loc="best")
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    plotting.save(figure, path)
    return figure


def _class_colors(n: int):
    from matplotlib import colormaps

    return colormaps["tab10" if n <= 10 else "tab20"]
