"""The training command, its data (built-in shapes, .npy / .pt / IDX files) and its PNG output."""

from __future__ import annotations

import gzip
import json
import math
import struct

import pytest
import torch

from vae_ext import data, images, train
from vae_ext.__main__ import main as cli_main

QUICK = ["--limit", "640", "--batch-size", "32", "--hidden", "128,64", "--iwae-k", "8", "--iwae-samples", "32"]


def _run(tmp_path, *extra, name="run"):
    out = tmp_path / name
    code = train.main([*QUICK, "--out", str(out), *extra])
    return code, out


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _png_shape(path):
    pixels = images.decode_png(path.read_bytes())
    return tuple(pixels.shape)


# --------------------------------------------------------------------------- training runs


def test_vae_training_lowers_the_loss_and_writes_every_output(tmp_path, capsys):
    code = cli_main(["train", *QUICK, "--epochs", "3", "--out", str(tmp_path / "run")])
    out = tmp_path / "run"
    assert code == 0
    printed = capsys.readouterr().out
    assert "epoch 1/3  train loss" in printed and "epoch 3/3" in printed and "final: test -elbo" in printed

    metrics = _metrics(out)
    train_losses = [e["train_loss"] for e in metrics["epochs"]]
    test_losses = [e["test_loss"] for e in metrics["epochs"]]
    assert train_losses[2] < train_losses[1] < train_losses[0]
    assert test_losses[2] < test_losses[0]
    assert len(metrics["step_losses"]) == 3 * math.ceil(576 / 32)
    final = metrics["final"]
    assert math.isfinite(final["test_log_px_iwae"]) and final["iwae_k"] == 8 and final["iwae_samples"] == 32
    assert metrics["build_info"]["version"] and metrics["data"] == {"name": "shapes32", "train": 576, "test": 64}

    grid = 2 + 8 * (3 * 32 + 2)  # 8 x 8 images of 32 px shown at 3x, 2 px apart
    assert _png_shape(out / "reconstructions.png") == (grid, grid)
    assert _png_shape(out / "samples.png") == (grid, grid)
    assert _png_shape(out / "loss_curve.png") == (400, 640, 3)


def test_checkpoint_reloads_the_trained_model(tmp_path):
    code, out = _run(tmp_path, "--epochs", "1", "--quiet", "--seed", "3")
    assert code == 0
    model, checkpoint = train.load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["config"]["model"] == "vae" and checkpoint["epochs"] == 1
    # The reloaded model reproduces the test loss recorded after the last epoch.
    args = train.parse_args([*QUICK, "--seed", "3"])
    _, test_set = train.load_data(args)
    with torch.no_grad():
        result = model(test_set.images, generator=torch.Generator().manual_seed(3 + 1))
    expected = _metrics(out)["epochs"][-1]["test_loss"]
    assert float(result.recon_loss + result.kl) == pytest.approx(expected, rel=1e-5)


def test_ae_l2_with_conv_networks_and_bf16_autocast(tmp_path):
    options = ["--model", "ae", "--ae-loss", "l2", "--arch", "conv", "--amp", "bf16", "--limit", "200"]
    code, out = _run(tmp_path, *options, "--epochs", "1")
    assert code == 0
    metrics = _metrics(out)
    assert "test_log_px_iwae" not in metrics["final"] and math.isfinite(metrics["final"]["test_loss"])
    assert (out / "samples.png").exists()
    model, _ = train.load_checkpoint(out / "checkpoint.pt")
    assert model.loss == "l2"


def test_vae_options_warmup_free_bits_learnable_prior_gaussian(tmp_path):
    options = ["--warmup", "cyclical", "--free-bits", "0.1", "--prior", "learnable", "--likelihood", "gaussian"]
    code, out = _run(tmp_path, "--epochs", "1", "--logvar-clamp", "8", *options)
    assert code == 0
    model, checkpoint = train.load_checkpoint(out / "checkpoint.pt")
    assert model.latent.prior_kind == "learnable" and model.latent.logvar_clamp == (-8.0, 8.0)
    assert model.likelihood == "gaussian" and model.loss_fn.free_bits == 0.1
    assert not torch.equal(checkpoint["model"]["latent.prior_mu"], torch.zeros(10))  # it was trained


def test_training_on_a_pt_file_of_uint8_images(tmp_path):
    pixels = (data.shapes_dataset(200, size=28, seed=4).images[:, 0] * 255).round().to(torch.uint8)
    torch.save({"images": pixels}, tmp_path / "digits.pt")
    code, out = _run(tmp_path, "--data", str(tmp_path / "digits.pt"), "--epochs", "1", "--quiet")
    assert code == 0
    assert _metrics(out)["config"]["sample_shape"] == [1, 28, 28]


def test_training_on_flat_vectors_writes_no_image_grids(tmp_path):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "vectors.npy", np.random.default_rng(0).random((100, 10), dtype=np.float32))
    code, out = _run(tmp_path, "--data", str(tmp_path / "vectors.npy"), "--epochs", "1", "--quiet")
    assert code == 0
    assert (out / "loss_curve.png").exists() and not (out / "samples.png").exists()


def test_bad_command_lines(tmp_path, capsys):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "vectors.npy", np.zeros((20, 10), dtype=np.float32))
    assert train.main(["--data", str(tmp_path / "vectors.npy"), "--arch", "conv", "--out", str(tmp_path / "x")]) == 2
    assert "--arch conv needs image data" in capsys.readouterr().err
    assert train.main(["--data", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err
    for argv in (["--model", "gan"], ["--beta", "-1"], ["--epochs", "0"], ["--warmup", "cosine"]):
        with pytest.raises(SystemExit):
            train.main(argv)


# --------------------------------------------------------------------------- built-in shapes


def test_shapes_are_deterministic_and_span_their_factors():
    first, again, other = data.shapes_dataset(300, seed=5), data.shapes_dataset(300, seed=5), data.shapes_dataset(300)
    assert torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    assert first.images.shape == (300, 1, 32, 32) and first.images.dtype == torch.float32
    assert first.images.min() == 0 and first.images.max() == 1
    assert set(first.factors["shape"].tolist()) == {0, 1, 2, 3}
    assert first.factors["scale"].min() >= data.SCALE_RANGE[0] and first.factors["scale"].max() <= data.SCALE_RANGE[1]
    border = torch.cat([first.images[..., 0, :], first.images[..., -1, :], first.images[..., 0], first.images[..., -1]])
    assert border.max() < 0.5  # shapes stay inside the frame (anti-aliased edges may touch it)


@pytest.mark.parametrize(
    "shape_id, area",
    [
        (0, 1.4**2),  # square of half side 0.7
        (1, math.pi * 0.55),  # ellipse with semi-axes 1 and 0.55
        (2, 3 * math.sqrt(3) / 4),  # equilateral triangle of circumradius 1
        (3, 1.05**2 + math.pi * 0.525**2),  # heart: diamond of side 1.05 and two half discs
    ],
)
def test_rendered_area_matches_the_shape(shape_id, area):
    n, size, scale = 16, 64, 0.3
    factors = {
        "shape": torch.full((n,), shape_id),
        "scale": torch.full((n,), scale),
        "rotation": torch.linspace(0, 2 * math.pi, n),
        "pos_x": torch.full((n,), 0.5),
        "pos_y": torch.full((n,), 0.5),
    }
    pixels = data.render_shapes(**factors, size=size).sum(dim=(1, 2, 3))
    expected = area * (scale * size) ** 2
    torch.testing.assert_close(pixels, torch.full((n,), expected), rtol=0.02, atol=0)


def test_shapes_differ_between_classes():
    n = 4
    factors = {
        "shape": torch.arange(n),
        "scale": torch.full((n,), 0.3),
        "rotation": torch.zeros(n),
        "pos_x": torch.full((n,), 0.5),
        "pos_y": torch.full((n,), 0.5),
    }
    rendered = data.render_shapes(**factors).reshape(n, -1)
    distances = torch.cdist(rendered, rendered)
    assert distances[~torch.eye(n, dtype=torch.bool)].min() > 2.0


# --------------------------------------------------------------------------- file loaders


def _write_idx(path, tensor, type_code, opener=open):
    raw = tensor.contiguous().view(torch.uint8).reshape(-1, tensor.element_size()).flip(1).flatten()  # big-endian
    header = struct.pack(">BBBB", 0, 0, type_code, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    with opener(path, "wb") as f:
        f.write(header + bytes(raw.tolist()))


def test_idx_files_read_back_exactly(tmp_path):
    pixels = torch.randint(0, 256, (7, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    _write_idx(tmp_path / "a-images-idx3-ubyte", pixels, 0x08)
    assert torch.equal(data.read_idx(tmp_path / "a-images-idx3-ubyte"), pixels)
    values = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
    _write_idx(tmp_path / "f.idx.gz", values, 0x0D, gzip.open)
    assert torch.equal(data.read_idx(tmp_path / "f.idx.gz"), values)
    shorts = torch.tensor([[1, -2, 300]], dtype=torch.int16)
    _write_idx(tmp_path / "s.idx", shorts, 0x0B)
    assert torch.equal(data.read_idx(tmp_path / "s.idx"), shorts)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad.idx")


def test_mnist_folder_prefers_the_training_images(tmp_path):
    train_pixels = torch.full((3, 6, 6), 255, dtype=torch.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_pixels, 0x08, gzip.open)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", torch.zeros(2, 6, 6, dtype=torch.uint8), 0x08, gzip.open)
    dataset = data.load_file(tmp_path)
    assert dataset.images.shape == (3, 1, 6, 6) and torch.all(dataset.images == 1.0)


@pytest.mark.parametrize(
    "raw, shape",
    [
        (torch.arange(2 * 16, dtype=torch.float32).reshape(2, 16), (2, 1, 4, 4)),  # flat square images
        (torch.rand(2, 10), (2, 10)),  # flat vectors
        (torch.rand(2, 5, 6, 3), (2, 3, 5, 6)),  # channels last
        (torch.rand(2, 3, 5, 6), (2, 3, 5, 6)),
    ],
)
def test_to_images_shapes_and_range(raw, shape):
    x = data.to_images(raw)
    assert x.shape == shape and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert x.max() > 0.5


# --------------------------------------------------------------------------- PNG and plots


def test_png_round_trip():
    gray = torch.randint(0, 256, (5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    rgb = torch.randint(0, 256, (4, 3, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    for pixels in (gray, rgb):
        encoded = images.encode_png(pixels)
        assert encoded.startswith(b"\x89PNG\r\n\x1a\n")
        assert torch.equal(images.decode_png(encoded), pixels)


def test_image_grid_places_each_image():
    batch = torch.stack([torch.full((1, 2, 3), v) for v in (0.0, 0.5, 1.0)])
    grid = images.image_grid(batch, ncol=2, padding=1, pad_value=9)
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 4)
    assert grid[1, 1] == 0 and grid[1, 5] == 128 and grid[4, 1] == 255 and grid[0, 0] == 9


def test_line_plot_draws_each_series_in_its_colour():
    canvas = images.line_plot([("a", [0, 1, 2], [3.0, 2.0, 1.0], 2), ("b", [0, 2], [1.0, 3.0], 2)], title="t")
    assert canvas.shape == (400, 640, 3)
    for color in images.PALETTE[:2]:
        assert (canvas == torch.tensor(color, dtype=torch.uint8)).all(dim=2).sum() > 100
