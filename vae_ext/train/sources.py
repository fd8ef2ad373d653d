"""``--data``: which data set a name or a path stands for."""

from __future__ import annotations

import torch

from .dataset import Dataset
from .downloads import SOURCES, load_mnist_like
from .files import load_file
from .shapes import shapes_dataset

NAMED = ("shapes", "digits", *SOURCES)


def digits_dataset() -> Dataset:
    """scikit-learn's 1797 handwritten digits, 8×8 pixels in 17 grey levels (shipped with
    scikit-learn: real data with no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ValueError("--data digits needs scikit-learn: pip install 'vae_ext[train]'") from error
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return Dataset(images, "digits8", labels=labels, label_names=tuple(str(d) for d in range(10)))


def load_dataset(spec: str, seed: int = 0, size: int = 32, n: int = 20000, cache_dir: str | None = None) -> Dataset:
    """A named data set (NAMED) or, for anything else, a path for load_file."""
    if spec == "shapes":
        return shapes_dataset(n=n, size=size, seed=seed)
    if spec == "digits":
        return digits_dataset()
    if spec in SOURCES:
        return load_mnist_like(spec, cache_dir)
    return load_file(spec)
