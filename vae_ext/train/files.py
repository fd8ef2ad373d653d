"""Training data from the user's own files: .npy / .pt tensors, IDX files, MNIST-style folders.

Every file that cannot be used is a ValueError ``<path>: <what is wrong>`` (a bad --data value)."""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from .dataset import Dataset, to_images
from .idx import find_idx_images, read_idx

_KEYS = ("images", "x", "data", "inputs")


def _first_line(error: BaseException) -> str:
    if isinstance(error, pickle.UnpicklingError):  # torch's text advises weights_only=False: not for data files
        return "not a torch.save file, or one holding objects other than tensors, which weights_only=True refuses"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_npy(path):
    try:
        import numpy as np
    except ImportError as error:
        raise ValueError(f"{path}: reading .npy files needs numpy (pip install numpy)") from error
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        array = np.load(path, allow_pickle=False)
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read it as a .npy file ({_first_line(error)})") from error
    except ValueError as error:  # numpy's words for a pickle or a broken header (pickles stay refused)
        what = "holds pickled objects, not an array of numbers" if magic == b"\x93NUMPY" else "not a .npy file"
        raise ValueError(f"{path}: {what}") from error
    if not isinstance(array, np.ndarray):  # np.load reads .npz archives too
        raise ValueError(f"{path}: expected one array, got {type(array).__name__} (a .npz archive?)")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: expected an array of numbers or booleans, got dtype {array.dtype}")
    return torch.from_numpy(array)


def _load_pt(path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: cannot read it as a torch.save file ({_first_line(error)})") from error
    if isinstance(obj, dict):
        for key in _KEYS:
            if key in obj:
                obj = obj[key]
                break
        else:
            raise ValueError(f"{path}: a dict file needs one of the keys {', '.join(map(repr, _KEYS))}")
    elif isinstance(obj, (tuple, list)) and obj:
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
        raise ValueError(f"{path}: does not exist")
    if path.endswith(".npy"):
        raw = _load_npy(path)
    elif path.endswith((".pt", ".pth")):
        raw = _load_pt(path)
    else:
        raw = read_idx(path)
    if raw.is_complex() or not (raw.is_floating_point() or raw.dtype == torch.bool or _is_integer(raw.dtype)):
        raise ValueError(f"{path}: expected pixels as numbers or booleans, got dtype {raw.dtype}")
    if raw.shape[0:1] == (0,):
        raise ValueError(f"{path}: holds no samples (shape {tuple(raw.shape)})")
    return Dataset(to_images(raw, path), os.path.basename(path))


def _is_integer(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
