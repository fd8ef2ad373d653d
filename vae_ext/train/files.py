"""Training data from the user's own files: .npy / .pt tensors, IDX files, MNIST-style folders."""

from __future__ import annotations

import os

import torch

from .dataset import Dataset, to_images
from .idx import find_idx_images, read_idx


def _load_tensor_file(path):
    if path.endswith(".npy"):
        try:
            import numpy as np
        except ImportError as error:
            raise ValueError(f"{path}: reading .npy files needs numpy (pip install numpy)") from error
        return torch.from_numpy(np.load(path, allow_pickle=False))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("images", "x", "data", "inputs"):
            if key in obj:
                return obj[key]
        raise ValueError(f"{path}: a dict file needs one of the keys 'images', 'x', 'data', 'inputs'")
    if isinstance(obj, (tuple, list)) and obj:
        obj = obj[0]
    if not isinstance(obj, torch.Tensor):
        # A data file with the wrong content is a bad value of --data, hence ValueError.
        raise ValueError(f"{path}: expected a tensor (or a dict / tuple holding one), got {type(obj).__name__}")  # noqa: TRY004
    return obj


def load_file(path) -> Dataset:
    """Images from a .npy / .pt tensor file, an IDX file or a folder holding MNIST IDX files."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = find_idx_images(path)
    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist")
    if path.endswith((".npy", ".pt", ".pth")):
        raw = _load_tensor_file(path)
    else:
        raw = read_idx(path)
    return Dataset(to_images(raw, path), os.path.basename(path))
