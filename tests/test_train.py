"""The training command: runs end to end, its outputs, checkpoints, options and errors."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from vae_ext import train
from vae_ext.__main__ import main as cli_main
from vae_ext.train import shapes

QUICK = ["--limit", "640", "--batch-size", "32", "--hidden", "128,64", "--iwae-k", "8", "--iwae-samples", "32"]
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
FIGURES = ("loss_curve.png", "reconstructions.png", "samples.png", "latent_traversal.png")


def _run(tmp_path, *extra, name="run"):
    out = tmp_path / name
    code = train.main([*QUICK, "--out", str(out), *extra])
    return code, out


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _png_size(path):
    """(height, width) of a PNG from its header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


def test_vae_training_lowers_the_loss_and_writes_every_output(tmp_path, capsys):
    pytest.importorskip("matplotlib")
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
    steps = 3 * math.ceil(576 / 32)
    assert len(metrics["step_losses"]) == len(metrics["step_recon"]) == len(metrics["step_kl"]) == steps
    assert metrics["step_beta"] == [1.0] * steps
    # Per step, the loss is the reconstruction plus β·KL (β = 1, no free bits).
    for loss, recon, kl in zip(metrics["step_losses"], metrics["step_recon"], metrics["step_kl"]):
        assert loss == pytest.approx(recon + kl, rel=1e-5)
    # The epoch means are the means of the steps (equal batches: 576 = 18 x 32).
    first = metrics["step_losses"][:18]
    assert metrics["epochs"][0]["train_loss"] == pytest.approx(sum(first) / 18, rel=1e-5)
    final = metrics["final"]
    assert math.isfinite(final["test_log_px_iwae"]) and final["iwae_k"] == 8 and final["iwae_samples"] == 32
    assert metrics["build_info"]["version"] and metrics["data"] == {"name": "shapes32", "train": 576, "test": 64}

    for name in FIGURES:
        height, width = _png_size(out / name)
        assert height > 200 and width > 300, name
    assert not (out / "latent_scatter.png").exists()  # 10-d latent: no scatter


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
    assert metrics["step_kl"] == [0.0] * len(metrics["step_losses"]) and metrics["step_recon"] == metrics["step_losses"]
    if HAS_MATPLOTLIB:
        assert (out / "samples.png").exists() and (out / "latent_traversal.png").exists()
    model, _ = train.load_checkpoint(out / "checkpoint.pt")
    assert model.loss_kind == "l2"


def test_vae_options_warmup_free_bits_learnable_prior_gaussian(tmp_path):
    options = ["--warmup", "cyclical", "--free-bits", "0.1", "--prior", "learnable", "--likelihood", "gaussian"]
    code, out = _run(tmp_path, "--epochs", "1", "--logvar-clamp", "8", *options)
    assert code == 0
    model, checkpoint = train.load_checkpoint(out / "checkpoint.pt")
    assert model.latent.prior_kind == "learnable" and model.latent.logvar_clamp == (-8.0, 8.0)
    assert model.likelihood == "gaussian" and model.loss_fn.free_bits == 0.1
    assert not torch.equal(checkpoint["model"]["latent.prior_mu"], torch.zeros(10))  # it was trained
    betas = _metrics(out)["step_beta"]
    assert betas[0] == 0.0 and max(betas) > betas[0]  # the warm-up starts at 0 and rises


def test_two_dimensional_latent_writes_a_scatter(tmp_path):
    pytest.importorskip("matplotlib")
    code, out = _run(tmp_path, "--epochs", "1", "--quiet", "--latent-dim", "2", "--limit", "200")
    assert code == 0
    assert _png_size(out / "latent_scatter.png")[0] > 200


def test_training_on_a_pt_file_of_uint8_images(tmp_path):
    pixels = (shapes.shapes_dataset(200, size=28, seed=4).images[:, 0] * 255).round().to(torch.uint8)
    torch.save({"images": pixels}, tmp_path / "digits.pt")
    code, out = _run(tmp_path, "--data", str(tmp_path / "digits.pt"), "--epochs", "1", "--quiet")
    assert code == 0
    assert _metrics(out)["config"]["sample_shape"] == [1, 28, 28]


def test_training_on_flat_vectors_writes_no_image_grids(tmp_path):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "vectors.npy", np.random.default_rng(0).random((100, 10), dtype=np.float32))
    code, out = _run(tmp_path, "--data", str(tmp_path / "vectors.npy"), "--epochs", "1", "--quiet")
    assert code == 0
    assert (out / "metrics.json").exists() and not (out / "samples.png").exists()
    assert (out / "loss_curve.png").exists() == HAS_MATPLOTLIB


def test_progress_lines_when_the_output_is_not_a_terminal(tmp_path, capsys):
    code, _ = _run(tmp_path, "--epochs", "1", "--limit", "200", "--progress-every", "0")
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 1/1: step")]
    assert len(lines) == math.ceil(180 / 32)  # every step when the interval is 0
    assert lines[-1].startswith("epoch 1/1: step 6/6 (100%), loss ")


def test_bad_command_lines(tmp_path, capsys):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "vectors.npy", np.zeros((20, 10), dtype=np.float32))
    assert train.main(["--data", str(tmp_path / "vectors.npy"), "--arch", "conv", "--out", str(tmp_path / "x")]) == 2
    assert "--arch conv needs image data" in capsys.readouterr().err
    assert train.main(["--data", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err
    for argv in (
        ["--model", "gan"],
        ["--beta", "-1"],
        ["--epochs", "0"],
        ["--warmup", "cosine"],
        ["--progress-every", "-1"],
    ):
        with pytest.raises(SystemExit):
            train.main(argv)


def test_compile_option_compiles_the_model_and_trains(tmp_path):
    """--compile: the model runs under torch.compile; with the same seed two runs agree."""
    options = ["--epochs", "2", "--quiet", "--limit", "320", "--iwae-k", "0", "--compile"]
    code, out = _run(tmp_path, *options, name="a")
    assert code == 0
    metrics = _metrics(out)
    losses = metrics["step_losses"]
    assert all(math.isfinite(v) for v in losses)
    assert metrics["epochs"][1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    code, again = _run(tmp_path, *options, name="b")
    assert code == 0 and _metrics(again)["step_losses"] == pytest.approx(losses, rel=1e-5)


def test_trainer_compiles_the_model_only_with_the_option():
    from vae_ext.train.loop import Trainer

    class Procs:
        device, world_size, rank = torch.device("cpu"), 1, 0

    model = torch.nn.Linear(2, 2)
    for flag, compiled in ((False, False), (True, True)):
        args = train.parse_args([*QUICK, "--model", "ae"] + (["--compile"] if flag else []))
        trainer = Trainer(args, Procs(), model, torch.zeros(4, 2))
        assert (trainer.compiled is not None) == compiled
