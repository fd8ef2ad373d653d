"""The built-in data: procedurally rendered 2-D shapes (no download), with their factors.

Four shapes (square, ellipse, triangle, heart) at a random scale, rotation and position, drawn
white on black with an anti-aliased one-pixel edge from a signed distance function.
"""

from __future__ import annotations

import math

import torch

from .dataset import Dataset

SHAPE_NAMES = ("square", "ellipse", "triangle", "heart")
SCALE_RANGE = (0.2, 0.34)  # shape radius as a fraction of the image side
POSITION_RANGE = (0.36, 0.64)  # shape centre, as a fraction of the image side
_CHUNK = 256  # images rendered at a time (bounds the memory of the sub-pixel grid)


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
    return Dataset(images, f"shapes{size}", factors, labels=factors["shape"], label_names=SHAPE_NAMES)
