"""The train command's figures (matplotlib) and its progress reports (tqdm or plain lines)."""

from __future__ import annotations

import io
import math

import pytest
import torch

from vae_ext.tools import plotting
from vae_ext.train import figures, progress

matplotlib = pytest.importorskip("matplotlib")


def _steps(n, beta=None):
    recon = [200.0 * math.exp(-k / 20) + 60 for k in range(n)]
    kl = [0.05 + 10 * (1 - math.exp(-k / 5)) for k in range(n)]
    betas = beta or [1.0] * n
    loss = [r + b * k for r, b, k in zip(recon, betas, kl)]
    return {"loss": loss, "recon": recon, "kl": kl, "beta": betas}


def _epochs(steps, per_epoch):
    records = []
    for e in range(len(steps["loss"]) // per_epoch):
        part = slice(e * per_epoch, (e + 1) * per_epoch)
        mean = {k: sum(v[part]) / per_epoch for k, v in steps.items()}
        records.append(
            {"epoch": e + 1, "train_loss": mean["loss"], "train_recon": mean["recon"], "train_kl": mean["kl"],
             "test_loss": mean["loss"] + 1, "test_recon": mean["recon"] + 1, "test_kl": mean["kl"]}
        )  # fmt: skip
    return records


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_loss_curve_shows_every_term_unclipped_with_epochs_marked(tmp_path):
    steps = _steps(60)
    figure = figures.loss_curve(tmp_path / "l.png", steps, _epochs(steps, 20), 20, True, "nats")
    assert (tmp_path / "l.png").stat().st_size > 10_000
    per_step, per_epoch = figure.axes[:2]
    labels = set(_lines(per_step))
    assert {"loss (-ELBO with β) (mean of 2 steps)", "reconstruction (mean of 2 steps)"} <= labels
    assert "β·KL term (mean of 2 steps)" in labels
    # Nothing clipped: every raw value of every curve lies inside the axes, from step 1 on.
    low, high = per_step.get_ylim()
    values = steps["loss"] + steps["recon"] + steps["kl"]
    assert low <= min(values) and high >= max(values)
    assert per_step.get_xlim()[0] < 1 and per_step.get_xlim()[1] > 60
    assert per_step.get_yscale() == "log"  # 260 down to 0.05: a log axis
    epoch_marks = [line for line in per_step.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_xdata()[0] for line in epoch_marks) == [20.5, 40.5]
    assert {"train loss", "test -ELBO (β = 1)", "test KL", "train β·KL term"} <= set(_lines(per_epoch))
    ticks = [t for t in per_epoch.get_xticks() if 0.5 <= t <= 3.5]
    assert ticks == [1, 2, 3]  # whole epochs


def test_loss_curve_of_an_ae_and_a_warm_up(tmp_path):
    steps = _steps(30)
    figure = figures.loss_curve(tmp_path / "ae.png", steps, _epochs(steps, 10), 10, False, "mse")
    assert not any("KL" in label for label in _lines(figure.axes[0]))
    warm = _steps(30, beta=[k / 29 for k in range(30)])
    figure = figures.loss_curve(tmp_path / "warm.png", warm, _epochs(warm, 10), 10, True, "nats")
    beta_axes = [ax for ax in figure.axes if "β (right axis)" in _lines(ax)]
    assert len(beta_axes) == 1


def test_reconstructions_label_originals_and_reconstructions(tmp_path):
    originals = torch.rand(16, 1, 6, 5)
    figure = figures.reconstructions(tmp_path / "r.png", originals, 1 - originals)
    assert [ax.get_ylabel() for ax in figure.axes] == ["original", "reconstruction"] * 2
    # The first strip is the first 8 originals, 1 px apart (small images), at their pixel values.
    strip = torch.as_tensor(figure.axes[0].get_images()[0].get_array())
    assert strip.shape == (1 + 6 + 1, 1 + 8 * (5 + 1))
    torch.testing.assert_close(strip[1:7, 1:6].float(), originals[0, 0])
    torch.testing.assert_close(strip[1:7, 7:12].float(), originals[1, 0])
    torch.testing.assert_close(torch.as_tensor(figure.axes[1].get_images()[0].get_array())[1:7, 1:6].float(),
                               1 - originals[0, 0])  # fmt: skip


def test_samples_and_traversal_and_scatter(tmp_path):
    figure = figures.samples(tmp_path / "s.png", torch.rand(64, 3, 4, 4), "draws")
    assert figure.axes[0].get_images()[0].get_array().shape == (1 + 8 * 5, 1 + 8 * 5, 3)  # RGB kept
    assert plotting.tile(torch.zeros(3, 32, 32), ncol=2).shape == (2 + 2 * 34, 2 + 2 * 34)
    rows = [(f"z{k}", torch.rand(5, 1, 4, 4)) for k in range(3)]
    figure = figures.latent_traversal(tmp_path / "t.png", rows, [-2, -1, 0, 1, 2], "z_k")
    assert [ax.get_ylabel() for ax in figure.axes] == ["z0", "z1", "z2"]
    assert [t.get_text() for t in figure.axes[-1].get_xticklabels()] == ["-2.0", "-1.0", "+0.0", "+1.0", "+2.0"]
    codes, labels = torch.randn(40, 2), torch.arange(40) % 4
    figure = figures.latent_scatter(tmp_path / "c.png", codes, labels, ("a", "b", "c", "d"), "codes")
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["a", "b", "c", "d"]
    for name in ("s.png", "t.png", "c.png"):
        assert (tmp_path / name).stat().st_size > 2_000


# --------------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_progress_lines_every_interval():
    stream = io.StringIO()
    report = progress.Progress(True, epochs=2, interval=0.0, stream=stream)
    report.start_epoch(1, 3)
    reads = []
    for k in range(3):
        report.step(lambda k=k: reads.append(k) or 10.0 - k)
    report.end_epoch()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and reads == [0, 1, 2]
    assert lines[0].startswith("epoch 2/2: step 1/3 (33%), loss 10, ") and "steps/s" in lines[0]
    silent = progress.Progress(True, epochs=1, interval=3600.0, stream=io.StringIO())
    silent.start_epoch(0, 3)
    silent.step(lambda: pytest.fail("the loss is read only when a line is due"))
    assert silent.stream.getvalue() == ""


def test_tqdm_bar_on_a_terminal():
    pytest.importorskip("tqdm")
    stream = _Terminal()
    report = progress.Progress(True, epochs=1, stream=stream)
    assert report.tqdm is not None
    report.start_epoch(0, 4)
    bar = report.bar
    for _ in range(4):
        report.step(lambda: 1.0)
    assert bar.n == 4 and bar.total == 4
    report.end_epoch()
    assert "epoch 1/1" in stream.getvalue() and report.bar is None


def test_disabled_progress_prints_nothing():
    stream = _Terminal()
    report = progress.Progress(False, epochs=1, interval=0.0, stream=stream)
    report.start_epoch(0, 2)
    report.step(lambda: 1.0)
    report.end_epoch()
    assert stream.getvalue() == ""
