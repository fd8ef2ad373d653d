"""The train command's clean failures: bad option values (argparse), unreadable data files,
divergence (a non-finite loss), the cyclical β of a too short run."""

from __future__ import annotations

import ast
import gzip
import os
import pickle

import pytest
import torch

from vae_ext import schedules, train
from vae_ext.train import loop
from vae_ext.train.distributed import Processes
from vae_ext.train.models import build_model, model_config

TINY = ["--limit", "96", "--size", "8", "--hidden", "16", "--latent-dim", "3", "--batch-size", "8", "--iwae-k", "0"]


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--hidden", "512,abc", "widths must be integers"),
        ("--hidden", "0", "widths must be >= 1"),
        ("--hidden", ",", "needs at least one width"),
        ("--latent-dim", "0", "must be >= 1"),
        ("--batch-size", "-4", "must be >= 1"),
        ("--epochs", "two", "not an integer"),
        ("--size", "0", "must be >= 1"),
        ("--shapes", "1", "must be >= 2"),
        ("--limit", "1", "must be >= 2"),
        ("--lr", "0", "must be > 0"),
        ("--lr", "nan", "must be > 0"),
        ("--beta", "-1", "must be >= 0"),
        ("--free-bits", "inf", "must be >= 0"),
        ("--logvar-clamp", "0", "must be > 0"),
        ("--test-fraction", "1", "must be in (0, 1)"),
        ("--threads", "0", "must be >= 1"),
        ("--iwae-k", "-1", "must be >= 0"),
        ("--iwae-samples", "0", "must be >= 1"),
        ("--progress-every", "-1", "must be >= 0"),
        ("--device", "gpu0", "not a device: 'gpu0'"),
    ],
)
def test_every_bad_option_value_is_an_argparse_error(option, value, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m vae_ext train") and f"argument {option}: {says}" in err


def _bad_files(folder):
    """(path, what the message says) for data files the command cannot use."""
    np = pytest.importorskip("numpy")
    files = []

    def add(name, says, write):
        path = folder / name
        write(path)
        files.append((path, says))

    add("empty.pt", "cannot read it as a torch.save file", lambda p: p.write_bytes(b""))
    whole = folder / "whole.pt"
    torch.save(torch.rand(10, 4), whole)
    add("truncated.pt", "cannot read it as a torch.save file", lambda p: p.write_bytes(whole.read_bytes()[:300]))
    add("pickle.pt", "cannot read it as a torch.save file", lambda p: p.write_bytes(pickle.dumps(os.getcwd)))
    add("words.pt", "expected a tensor", lambda p: torch.save(["a", "b"], p))
    add("keys.pt", "a dict file needs one of the keys", lambda p: torch.save({"y": torch.zeros(3, 2)}, p))
    add(
        "objects.npy",
        "holds pickled objects, not an array of numbers",
        lambda p: np.save(p, np.array([{}, 1], dtype=object)),
    )
    add("text.npy", "not a .npy file", lambda p: p.write_bytes(b"hello"))
    add(
        "strings.npy",
        "expected an array of numbers or booleans, got dtype <U1",
        lambda p: np.save(p, np.array(["a"] * 4)),
    )
    complex_pixels = torch.zeros(4, 3, dtype=torch.complex64)
    add("complex.pt", "as numbers or booleans, got dtype torch.complex64", lambda p: torch.save(complex_pixels, p))
    add("flat.pt", "need at least 2 dims [N, ...], got shape (10,)", lambda p: torch.save(torch.zeros(10), p))
    add("nothing.pt", "holds no samples", lambda p: torch.save(torch.zeros(0, 4), p))
    add(
        "five.pt",
        "expected [N, D], [N, H, W] or [N, C, H, W] data",
        lambda p: torch.save(torch.zeros(2, 1, 1, 2, 2), p),
    )
    add(
        "magic-idx3-ubyte",
        "not an IDX file (bad magic number)",
        lambda p: p.write_bytes(b"\x00\x01\x08\x01" + bytes(8)),
    )
    add(
        "cut-idx3-ubyte.gz",
        "cannot read it as an IDX file",
        lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01")[:-6]),
    )
    files.append((folder / "missing.pt", "does not exist"))
    return files


def test_every_unreadable_data_file_is_one_error_line(tmp_path, capsys):
    for path, says in _bad_files(tmp_path):
        assert train.main([*TINY, "--data", str(path), "--out", str(tmp_path / "out")]) == 2, path
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and says in err, (path, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """A loss that turns NaN in epoch 2 (the batch of step 4 made NaN): exit 1, the message names
    the epoch, the step and the term, and the checkpoint is still epoch 1's."""
    out = tmp_path / "run"
    train_step = loop.Trainer.train_step

    def poisoned(self, x):
        return train_step(self, x * float("nan") if self.step == 11 + 3 else x)

    monkeypatch.setattr(loop.Trainer, "train_step", poisoned)
    assert train.main([*TINY, "--epochs", "3", "--quiet", "--out", str(out)]) == 1  # 86 / 8: 11 steps an epoch
    err = capsys.readouterr().err
    what = "the reconstruction term of the loss is not finite at epoch 2, step 4 (step 15 of the run)"
    assert err.startswith(f"error: training diverged: {what}")
    assert f"{out / 'checkpoint.pt'} keeps the last good state" in err and err.count("\n") == 1
    model, state = train.load_checkpoint(out / "checkpoint.pt")
    assert state["epochs"] == 1 and state["step"] == 11
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_weights_broken_by_an_epochs_last_step_are_divergence_too(tmp_path, monkeypatch, capsys):
    """The last step of epoch 2 has a finite loss but leaves a NaN weight: the test pass after
    the epoch finds it, and the checkpoint stays epoch 1's."""
    out = tmp_path / "run"
    train_step = loop.Trainer.train_step

    def breaks_a_weight(self, x):
        skipped = train_step(self, x)
        if self.step == 22:
            with torch.no_grad():
                next(self.model.parameters())[0] = float("nan")
        return skipped

    monkeypatch.setattr(loop.Trainer, "train_step", breaks_a_weight)
    assert train.main([*TINY, "--epochs", "3", "--quiet", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "error: training diverged: the reconstruction term of the test loss is not finite after epoch 2"
    )
    assert "(step 22 of the run)" in err
    assert train.load_checkpoint(out / "checkpoint.pt")[1]["epochs"] == 1


def test_a_huge_learning_rate_diverges_in_the_first_epoch(tmp_path, capsys):
    assert train.main([*TINY, "--epochs", "2", "--lr", "1e9", "--quiet", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training diverged: the ") and ("at epoch 1, step " in err or "after epoch 1" in err)
    assert "no checkpoint was written before it" in err and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_which_term_went_non_finite():
    nan, inf = float("nan"), float("inf")
    assert loop._nonfinite_term([1.0, 0.5, 0.5]) is None
    assert loop._nonfinite_term([nan, nan, 0.5]) == "reconstruction"
    assert loop._nonfinite_term([inf, 0.5, inf]) == "KL"
    assert loop._nonfinite_term([inf, 0.5, 1e30]) == "loss"  # β·KL overflowed in the sum


def _trainer(*options, n=36):
    args = train.parse_args([*TINY, *options])
    torch.manual_seed(0)
    images = torch.rand(n, 1, 4, 4)
    model = build_model(model_config(args, images.shape[1:]))
    return loop.Trainer(args, Processes("cpu"), model, images), images


def test_fp16_steps_the_scaler_skips_are_not_divergence():
    trainer, images = _trainer("--amp", "fp16")
    nan_batch = images[:4] * float("nan")
    for batch in (images[:4], nan_batch, images[4:8], nan_batch, images[8:12]):
        trainer.train_batch(batch)
    assert trainer.epoch_skipped == [False, True, False, True, False]  # NaN gradients: skipped
    trainer.check_finite()  # no Divergence
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())

    plain, _ = _trainer()
    plain.train_batch(images[:4])
    plain.train_batch(nan_batch)
    with pytest.raises(loop.Divergence, match="the reconstruction term of the loss is not finite at epoch 1, step 2"):
        plain.check_finite()


def test_fp16_a_scaler_that_skips_forever_is_divergence(monkeypatch):
    monkeypatch.setattr(loop, "FP16_SKIP_LIMIT", 3)
    trainer, images = _trainer("--amp", "fp16")
    for _ in range(3):
        trainer.train_batch(images[:4] * float("nan"))
    assert trainer.epoch_skipped == [True] * 3
    with pytest.raises(loop.Divergence, match="at epoch 1, step 3"):
        trainer.check_finite()


def test_cyclical_beta_needs_two_steps_a_cycle(tmp_path, capsys):
    assert schedules.make_beta_schedule("cyclical", 1.0, 8, cycles=4)(1) == 1.0  # 2-step cycles: 0, 1, 0, 1, ...
    with pytest.raises(ValueError, match=r"4 cycles needs at least 8 steps \(2 per cycle\), got total_steps=7"):
        schedules.make_beta_schedule("cyclical", 1.0, 7, cycles=4)
    argv = [*TINY, "--batch-size", "32", "--warmup", "cyclical", "--epochs", "2", "--out", str(tmp_path / "run")]
    assert train.main(argv) == 2  # 86 samples / 32: 3 steps an epoch, 6 in all
    err = capsys.readouterr().err
    assert err.startswith("error: --warmup cyclical: a cyclical schedule of 4 cycles needs at least 8 steps")
    assert "(--epochs 2 × 3 steps per epoch)" in err


def test_compiled_training_evaluates_the_eager_model_with_its_fixed_generator():
    """With --compile the test pass still uses the seed + 1 generator (as one process and DDP do)
    and leaves the default generator, whose stream the compiled training ε come from, alone."""
    trainer, images = _trainer("--compile", "--seed", "3")
    assert trainer.compiled is not None
    state = torch.get_rng_state()
    sums = trainer.evaluate(images)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        out = trainer.model.eval()(images, generator=torch.Generator().manual_seed(3 + 1))
    n = images.shape[0]
    expected = torch.stack([out.recon_loss + out.kl, out.recon_loss, out.kl]) * n
    torch.testing.assert_close(sums[:3], expected, rtol=1e-6, atol=1e-4)
    assert sums[3] == n


def test_the_train_modules_import_each_other_without_a_cycle():
    """Module-level and deferred (in-function) imports alike: cli, loop and run in particular."""
    folder = os.path.dirname(train.__file__)
    names = {name[:-3] for name in os.listdir(folder) if name.endswith(".py") and name != "__init__.py"}
    graph = {}
    for name in names:
        with open(os.path.join(folder, name + ".py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        graph[name] = {
            alias.name if node.module is None else node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names
        } & names
    assert "amp" in graph["loop"] and "amp" in graph["cli"] and "cli" not in graph["loop"]

    def reaches(start, target, seen):
        return any(n == target or (n not in seen and reaches(n, target, seen | {n})) for n in graph[start])

    cycles = sorted(name for name in names if reaches(name, name, {name}))
    assert cycles == [], graph
