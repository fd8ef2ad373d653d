"""The IDX format of the MNIST family of data sets (optionally gzipped)."""

from __future__ import annotations

import gzip
import math
import os
import struct

import torch

_IDX_DTYPES = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}


def read_idx(path) -> torch.Tensor:
    """An IDX file (optionally gzipped) as a tensor of its stored dtype and shape.

    Raises ValueError when the magic number is wrong or the header's shape does not match the
    number of bytes that follow it (a truncated or corrupted file).
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:  # gzip raises these on truncated or non-gzip files
        raise ValueError(f"{path}: cannot read it as an IDX file: {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype, itemsize = _IDX_DTYPES[data[2]]
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: IDX header cut short")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = bytearray(data[4 + 4 * ndim :])
    if len(body) != math.prod(shape) * itemsize:
        raise ValueError(f"{path}: IDX header says shape {shape} but holds {len(body)} bytes of data")
    raw = torch.frombuffer(body, dtype=torch.uint8) if body else torch.empty(0, dtype=torch.uint8)
    if itemsize > 1:  # big-endian on disk
        raw = raw.view(-1, itemsize).flip(1).contiguous().flatten()
    return raw.view(dtype).reshape(shape).clone()


def find_idx_images(directory) -> str:
    """The image file of an MNIST-style folder, the training images when both splits are there."""
    names = sorted(name for name in os.listdir(directory) if "images-idx3-ubyte" in name or "images.idx3" in name)
    if not names:
        raise ValueError(f"{directory}: no '*images-idx3-ubyte[.gz]' file in this folder")
    train = [name for name in names if name.startswith("train")]
    return os.path.join(directory, (train or names)[0])
