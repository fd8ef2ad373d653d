"""Training data: procedurally rendered 2-D shapes (no download) and loaders for user files.

Every loader returns float32 images in [0, 1], shaped [N, C, H, W] (or [N, D] for flat
vectors that are not square images).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass, field

import torch

SHAPE_NAMES = ("square", "ellipse", "triangle", "heart")
SCALE_RANGE = (0.2, 0.34)  # shape radius as a fraction of the image side
POSITION_RANGE = (0.36, 0.64)  # shape centre, as a fraction of the image side
_CHUNK = 256  # images rendered at a time (bounds the memory of the sub-pixel grid)


@dataclass
class Dataset:
    """In-memory images plus what is known about them."""

    images: torch.Tensor
    name: str
    factors: dict = field(default_factory=dict)

    def __len__(self):
        return self.images.shape[0]

    @property
    def sample_shape(self):
        return tuple(self.images.shape[1:])

    def subset(self, index):
        factors = {k: v[index] for k, v in self.factors.items()}
        return Dataset(self.images[index], self.name, factors)


# --------------------------------------------------------------------------- 2-D shapes


def _box_sdf(u, v, half):
    qu, qv = u.abs() - half, v.abs() - half
    outside = torch.sqrt(qu.clamp(min=0) ** 2 + qv.clamp(min=0) ** 2)
    return outside + torch.maximum(qu, qv).clamp(max=0)


def _implicit_sdf(f, grad_u, grad_v):
    """First-order distance to the zero set of f: f / |grad f| (exact enough within a pixel)."""
    return f / torch.sqrt(grad_u * grad_u + grad_v * grad_v).clamp(min=1e-6)


def _signed_distance(shape_id: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) to a shape of bounding radius about 1, in local units."""
    if shape_id == 0:  # square, corners at radius 0.99
        return _box_sdf(u, v, 0.7)
    if shape_id == 1:  # ellipse with semi-axes 1 and 0.55
        a2, b2 = 1.0, 0.55**2
        return _implicit_sdf(u * u / a2 + v * v / b2 - 1.0, 2 * u / a2, 2 * v / b2)
    if shape_id == 2:  # equilateral triangle, circumradius 1, apex up: the farthest of its edge lines
        c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
        return torch.maximum(torch.maximum(-v, c * u + s * v), -c * u + s * v) - 0.5
    # heart: a diamond (square turned 45 degrees) and two discs on its upper edges
    side = 1.05
    v = v + 0.073 * side
    r = side / math.sqrt(2)
    diamond = _box_sdf((u + v) / math.sqrt(2), (v - u) / math.sqrt(2), side / 2)
    left = torch.sqrt((u + r / 2) ** 2 + (v - r / 2) ** 2) - side / 2
    right = torch.sqrt((u - r / 2) ** 2 + (v - r / 2) ** 2) - side / 2
    return torch.minimum(diamond, torch.minimum(left, right))


def _render_chunk(shape, scale, rotation, pos_x, pos_y, size):
    n = shape.shape[0]
    centers = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    gx = centers.view(1, 1, size)  # x grows to the right
    gy = (1.0 - centers).view(1, size, 1)  # y grows upwards
    dx, dy = gx - pos_x.view(n, 1, 1), gy - pos_y.view(n, 1, 1)
    cos, sin = torch.cos(rotation).view(n, 1, 1), torch.sin(rotation).view(n, 1, 1)
    s = scale.view(n, 1, 1)
    u, v = (cos * dx + sin * dy) / s, (cos * dy - sin * dx) / s  # rotate by -rotation, then scale
    distance = torch.empty(n, size, size)
    for shape_id in range(len(SHAPE_NAMES)):
        rows = (shape == shape_id).nonzero().flatten()
        if rows.numel():
            distance[rows] = _signed_distance(shape_id, u[rows], v[rows])
    # Pixel coverage from the distance in pixels: a one-pixel-wide anti-aliased edge.
    return (0.5 - distance * s * size).clamp(0.0, 1.0).unsqueeze(1)


def render_shapes(shape, scale, rotation, pos_x, pos_y, size=32):
    """Anti-aliased white shapes on black, [N, 1, size, size] float32, from per-image factors.

    shape: int64 index into SHAPE_NAMES; scale: radius / image side; rotation: radians;
    pos_x, pos_y: centre / image side (y up).
    """
    factors = [t.to(torch.float32) if i else t for i, t in enumerate((shape, scale, rotation, pos_x, pos_y))]
    out = [
        _render_chunk(*(f[start : start + _CHUNK] for f in factors), size) for start in range(0, shape.shape[0], _CHUNK)
    ]
    return torch.cat(out) if out else torch.zeros(0, 1, size, size)


def shapes_dataset(n=20000, size=32, seed=0) -> Dataset:
    """n shapes with factors drawn uniformly from a generator seeded with ``seed`` (deterministic)."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(low, high):
        return torch.rand(n, generator=gen, dtype=torch.float64) * (high - low) + low

    factors = {
        "shape": torch.randint(len(SHAPE_NAMES), (n,), generator=gen),
        "scale": uniform(*SCALE_RANGE),
        "rotation": uniform(0.0, 2 * math.pi),
        "pos_x": uniform(*POSITION_RANGE),
        "pos_y": uniform(*POSITION_RANGE),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small elementwise chunks: threads cost more than they give here
    try:
        images = render_shapes(**factors, size=size)
    finally:
        torch.set_num_threads(threads)
    return Dataset(images, f"shapes{size}", factors)


# --------------------------------------------------------------------------- user files

_IDX_DTYPES = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}


def read_idx(path) -> torch.Tensor:
    """An MNIST-format IDX file (optionally gzipped) as a tensor of its stored dtype."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype, itemsize = _IDX_DTYPES[data[2]]
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = bytearray(data[4 + 4 * ndim :])
    if len(body) != math.prod(shape) * itemsize:
        raise ValueError(f"{path}: IDX header says shape {shape} but holds {len(body)} bytes of data")
    raw = torch.frombuffer(body, dtype=torch.uint8)
    if itemsize > 1:  # big-endian on disk
        raw = raw.view(-1, itemsize).flip(1).contiguous().flatten()
    return raw.view(dtype).reshape(shape).clone()


def _find_idx_images(directory):
    names = sorted(name for name in os.listdir(directory) if "images-idx3-ubyte" in name or "images.idx3" in name)
    if not names:
        raise ValueError(f"{directory}: no '*images-idx3-ubyte[.gz]' file in this folder")
    train = [name for name in names if name.startswith("train")]
    return os.path.join(directory, (train or names)[0])


def _load_tensor_file(path):
    if path.endswith(".npy"):
        try:
            import numpy as np
        except ImportError as error:
            raise ValueError(f"{path}: reading .npy files needs numpy") from error
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


def to_images(tensor: torch.Tensor, name="data") -> torch.Tensor:
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


def load_file(path) -> Dataset:
    """Images from a .npy / .pt tensor file, an IDX file or a folder holding MNIST IDX files."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = _find_idx_images(path)
    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist")
    if path.endswith((".npy", ".pt", ".pth")):
        raw = _load_tensor_file(path)
    else:
        raw = read_idx(path)
    return Dataset(to_images(raw, path), os.path.basename(path))


def load_dataset(spec: str, seed=0, size=32, n=20000) -> Dataset:
    """``"shapes"`` for the built-in shapes, otherwise a path for load_file."""
    if spec == "shapes":
        return shapes_dataset(n=n, size=size, seed=seed)
    return load_file(spec)


def train_test_split(dataset: Dataset, test_fraction=0.1, seed=0):
    """A seeded random split; the test part gets round(test_fraction * N) samples (at least 1)."""
    n = len(dataset)
    if n < 2:
        raise ValueError(f"need at least 2 samples to split into train and test, got {n}")
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return dataset.subset(order[n_test:]), dataset.subset(order[:n_test])
