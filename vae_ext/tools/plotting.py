"""Matplotlib for the tools' figures (train and bench): the one place that imports it.

Figures are built with ``matplotlib.figure.Figure`` and written by its Agg canvas: no pyplot,
no global state, no display needed, and a user's interactive backend is left alone.
matplotlib is in the ``[train]`` extra; the library core never imports this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

COLORS = {"loss": "#1f77b4", "recon": "#2ca02c", "kl": "#d62728", "beta": "#7f7f7f"}
IMPL_COLORS = {"eager": "#ff7f0e", "compile": "#9467bd", "vae_ext": "#1f77b4", "copy": "#000000"}


def new_figure(width: float, height: float, dpi: int = 110):
    """A matplotlib Figure, or ImportError saying how to install matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "vae_ext's figures need matplotlib: pip install 'vae_ext[train]' (or pip install matplotlib)"
        ) from error
    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def save(figure, path: str | os.PathLike) -> None:
    """PNG (by the file name) with every label inside the image."""
    figure.savefig(path, bbox_inches="tight", pad_inches=0.08)


def wants_log_scale(values: Sequence[float], ratio: float = 20.0) -> bool:
    """A log axis when the positive values span more than ``ratio`` (early losses dwarf late ones)."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(positive) and max(positive) / min(positive) > ratio


def log_y(ax, values: Sequence[float]) -> None:
    """A log y axis labelled with plain numbers: at powers of ten when the data spans more than
    three decades, at 1, 2 and 5 times them down to one decade, and more finely below that."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    decades = math.log10(max(positive) / min(positive)) if positive else 0.0
    subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 1 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def to_display(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] float images in [0, 1] as [N, H, W] (gray) or [N, H, W, 3] for imshow."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.dim() == 3:
        return images
    return images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)


def tile(images: torch.Tensor, ncol: int, pad: int | None = None, pad_value: float = 0.35) -> torch.Tensor:
    """One picture of ``images`` ([N, H, W] or [N, H, W, 3]) in rows of ``ncol``, ``pad`` px apart
    (default: a sixteenth of the image side, at least 1)."""
    n, h, w = images.shape[:3]
    pad = max(1, round(min(h, w) / 16)) if pad is None else pad
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    shape = (pad + nrow * (h + pad), pad + ncol * (w + pad), *images.shape[3:])
    grid = torch.full(shape, pad_value)
    for index in range(n):
        top, left = pad + (index // ncol) * (h + pad), pad + (index % ncol) * (w + pad)
        grid[top : top + h, left : left + w] = images[index]
    return grid


def show_image(ax, picture: torch.Tensor) -> None:
    """A [H, W] (gray, 0 black .. 1 white) or [H, W, 3] picture, pixels as squares, no axis ticks."""
    kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if picture.dim() == 2 else {}
    ax.imshow(picture.numpy(), interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
