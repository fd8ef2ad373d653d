"""PNG output without extra dependencies: a tiny encoder (zlib + struct), image grids, line plots.

Pixel arrays are uint8 torch tensors, [H, W] (grayscale) or [H, W, 3] (RGB).
"""

from __future__ import annotations

import ctypes
import itertools
import math
import struct
import zlib

import torch

# --------------------------------------------------------------------------- PNG


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: torch.Tensor) -> bytes:
    """PNG bytes of a uint8 [H, W] (grayscale) or [H, W, 3] (RGB) tensor."""
    if pixels.dtype != torch.uint8 or pixels.dim() not in (2, 3) or (pixels.dim() == 3 and pixels.shape[2] != 3):
        raise ValueError(f"pixels must be uint8 [H, W] or [H, W, 3], got {pixels.dtype} {tuple(pixels.shape)}")
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.dim() == 2 else 2
    rows = pixels.reshape(height, -1).cpu()
    # Filter type 0 (none) in front of every row.
    raw = torch.cat((torch.zeros(height, 1, dtype=torch.uint8), rows), dim=1)  # a fresh, exact storage
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(ctypes.string_at(raw.data_ptr(), raw.numel()), 6))
        + _chunk(b"IEND", b"")
    )


def write_png(path, pixels: torch.Tensor) -> None:
    with open(path, "wb") as f:
        f.write(encode_png(pixels))


def decode_png(data: bytes) -> torch.Tensor:
    """Reads back what encode_png writes (8-bit, filter 0, gray or RGB): used by the tests."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, _, color_type = header[:4]
    channels = 1 if color_type == 0 else 3
    raw = torch.frombuffer(bytearray(zlib.decompress(idat)), dtype=torch.uint8).reshape(height, -1)
    if bool((raw[:, 0] != 0).any()):
        raise ValueError("only PNG filter type 0 is supported")
    pixels = raw[:, 1:]
    return pixels if channels == 1 else pixels.reshape(height, width, 3)


# --------------------------------------------------------------------------- image grids


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] to uint8 (values outside are clipped)."""
    return (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def image_grid(images: torch.Tensor, ncol: int = 8, padding: int = 2, scale: int = 1, pad_value: int = 64):
    """A uint8 [H, W] (1 channel) or [H, W, 3] grid of float [N, C, h, w] images in [0, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    n, channels, h, w = images.shape
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    pixels = to_uint8(images)
    if scale > 1:
        pixels = pixels.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        h, w = h * scale, w * scale
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    grid = torch.full(
        (channels, padding + nrow * (h + padding), padding + ncol * (w + padding)), pad_value, dtype=torch.uint8
    )
    for index in range(n):
        top = padding + (index // ncol) * (h + padding)
        left = padding + (index % ncol) * (w + padding)
        grid[:, top : top + h, left : left + w] = pixels[index]
    return grid[0] if channels == 1 else grid.permute(1, 2, 0).contiguous()


# --------------------------------------------------------------------------- a 3x5 pixel font

# Each glyph: five rows of three bits (left bit first).
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "-": "000000111000000",
    "+": "000010111010000", ":": "000010000010000", "(": "010100100100010", ")": "010001001001010",
    "/": "001001010100100", "=": "000111000111000", " ": "000000000000000", "_": "000000000000111",
    "a": "010101111101101", "b": "110101110101110", "c": "011100100100011", "d": "110101101101110",
    "e": "111100110100111", "f": "111100110100100", "g": "011100101101011", "h": "101101111101101",
    "i": "111010010010111", "j": "001001001101010", "k": "101101110101101", "l": "100100100100111",
    "m": "101111111101101", "n": "110101101101101", "o": "010101101101010", "p": "110101110100100",
    "q": "010101101110011", "r": "110101110101101", "s": "011100010001110", "t": "111010010010010",
    "u": "101101101101111", "v": "101101101101010", "w": "101101111111101", "x": "101101010101101",
    "y": "101101010010010", "z": "111001010100111",
}  # fmt: skip


def draw_text(canvas: torch.Tensor, text: str, top: int, left: int, color, scale: int = 2) -> None:
    """Draws lower-case text with the 3x5 font into an RGB uint8 canvas [H, W, 3] (clipped)."""
    color = torch.tensor(color, dtype=torch.uint8)
    height, width = canvas.shape[:2]
    for index, char in enumerate(text.lower()):
        bits = _FONT.get(char, _FONT[" "])
        for bit, value in enumerate(bits):
            if value == "1":
                row, col = top + (bit // 3) * scale, left + (index * 4 + bit % 3) * scale
                canvas[max(row, 0) : min(row + scale, height), max(col, 0) : min(col + scale, width)] = color


def text_width(text: str, scale: int = 2) -> int:
    return (len(text) * 4 - 1) * scale


# --------------------------------------------------------------------------- line plots

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def _format_tick(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
        return f"{value:.1e}"
    return f"{value:.4g}"


def _draw_segment(canvas, x0, y0, x1, y1, color, thickness):
    steps = int(max(abs(x1 - x0), abs(y1 - y0), 1) * 2)
    t = torch.linspace(0, 1, steps + 1)
    xs = (x0 + (x1 - x0) * t).round().long()
    ys = (y0 + (y1 - y0) * t).round().long()
    height, width = canvas.shape[:2]
    for dy in range(-(thickness // 2), thickness - thickness // 2):
        for dx in range(-(thickness // 2), thickness - thickness // 2):
            inside = (ys + dy >= 0) & (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)
            canvas[(ys + dy)[inside], (xs + dx)[inside]] = torch.tensor(color, dtype=torch.uint8)


def line_plot(series, *, width=640, height=400, title="", xlabel="", y_range=None):
    """An RGB uint8 [H, W, 3] line plot.

    ``series``: list of (label, xs, ys, thickness). ``y_range``: (low, high), values outside
    are clipped to the frame; by default the range of all ys.
    """
    canvas = torch.full((height, width, 3), 255, dtype=torch.uint8)
    left, right, top, bottom = 70, 16, 34, 40
    xs_all = [float(x) for _, xs, _, _ in series for x in xs]
    ys_all = [float(y) for _, _, ys, _ in series for y in ys if math.isfinite(float(y))]
    if not xs_all or not ys_all:
        draw_text(canvas, "no data", height // 2, width // 2 - 40, (0, 0, 0))
        return canvas
    x_low, x_high = min(xs_all), max(xs_all)
    y_low, y_high = y_range if y_range is not None else (min(ys_all), max(ys_all))
    x_high = x_high if x_high > x_low else x_low + 1
    y_high = y_high if y_high > y_low else y_low + 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x):
        return left + (float(x) - x_low) / (x_high - x_low) * plot_w

    def py(y):
        y = min(max(float(y), y_low), y_high)
        return top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    gray, black = (200, 200, 200), (0, 0, 0)
    for k in range(5):  # horizontal grid lines with y ticks
        y = y_low + (y_high - y_low) * k / 4
        _draw_segment(canvas, left, py(y), left + plot_w, py(y), gray, 1)
        label = _format_tick(y)
        draw_text(canvas, label, int(py(y)) - 5, left - 8 - text_width(label), black)
    _draw_segment(canvas, left, top, left, top + plot_h, black, 1)
    _draw_segment(canvas, left, top + plot_h, left + plot_w, top + plot_h, black, 1)
    for x, anchor in ((x_low, 0), (x_high, 1)):
        label = _format_tick(x)
        draw_text(canvas, label, top + plot_h + 6, int(px(x)) - anchor * text_width(label), black)
    draw_text(canvas, xlabel, top + plot_h + 22, left + plot_w // 2 - text_width(xlabel) // 2, black)
    draw_text(canvas, title, 10, left, black)
    for index, (label, xs, ys, thickness) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        points = [(px(x), py(y)) for x, y in zip(xs, ys) if math.isfinite(float(y))]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            _draw_segment(canvas, x0, y0, x1, y1, color, thickness)
        if len(points) == 1:
            _draw_segment(canvas, *points[0], *points[0], color, thickness + 2)
        legend_top = top + 6 + 16 * index
        _draw_segment(canvas, width - right - 150, legend_top + 5, width - right - 130, legend_top + 5, color, 3)
        draw_text(canvas, label, legend_top, width - right - 124, black)
    return canvas
