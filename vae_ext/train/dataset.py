"""The in-memory data set the train command works on, and the conversions into it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Dataset:
    """Float32 images in [0, 1], [N, C, H, W] (or [N, D] for flat vectors), with what is known
    about them: generative factors (built-in shapes), class labels and their names."""

    images: torch.Tensor
    name: str
    factors: dict = field(default_factory=dict)
    labels: torch.Tensor | None = None
    label_names: tuple = ()
    test: Dataset | None = None  # the source's own held-out split, when it has one

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.images.shape[1:])

    def subset(self, index) -> Dataset:
        factors = {k: v[index] for k, v in self.factors.items()}
        labels = None if self.labels is None else self.labels[index]
        return Dataset(self.images[index], self.name, factors, labels, self.label_names)


def to_images(tensor: torch.Tensor, name: str = "data") -> torch.Tensor:
    """Any [N, ...] array of pixels to float32 in [0, 1], as [N, C, H, W] or [N, D]."""
    if tensor.dim() < 2:
        raise ValueError(f"{name}: need at least 2 dims [N, ...], got shape {tuple(tensor.shape)}")
    x = tensor.detach().cpu()
    if x.dtype == torch.bool or not x.is_floating_point():
        x = x.float() / (255.0 if x.dtype == torch.uint8 else max(float(x.max()), 1.0))
    else:
        x = x.float()
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:  # rescale to [0, 1]
            x = (x - low) / max(high - low, 1e-12)
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        return x.reshape(-1, 1, side, side) if side * side == x.shape[1] else x
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):  # channels last
        return x.permute(0, 3, 1, 2).contiguous()
    if x.dim() == 4:
        return x.contiguous()
    raise ValueError(f"{name}: expected [N, D], [N, H, W] or [N, C, H, W] data, got shape {tuple(tensor.shape)}")


def train_test_split(dataset: Dataset, test_fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
    """The source's own test split when it has one, else a seeded random split whose test part
    gets round(test_fraction * N) samples (at least 1)."""
    if dataset.test is not None:
        return dataset, dataset.test
    n = len(dataset)
    if n < 2:
        raise ValueError(f"need at least 2 samples to split into train and test, got {n}")
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return dataset.subset(order[n_test:]), dataset.subset(order[:n_test])
