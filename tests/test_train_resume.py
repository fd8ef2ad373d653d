"""The train command never loses a run: a checkpoint after every epoch, --resume to the numbers of
an uninterrupted run (bit for bit on the CPU), stops on SIGINT / SIGTERM, kills at any moment."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from vae_ext import train
from vae_ext.train import atomic, checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny and quick: 86 train / 10 test 8x8 shapes, batch 2 (43 steps an epoch), a VAE whose ε and
# β warm-up make every random state and counter matter.
OPTIONS = [
    "--limit", "96", "--size", "8", "--hidden", "16", "--latent-dim", "3", "--batch-size", "2", "--epochs", "8",
    "--iwae-k", "2", "--iwae-samples", "8", "--threads", "1", "--seed", "7", "--warmup", "linear", "--no-figures",
]  # fmt: skip
RESUME = ["--resume", "--quiet", "--no-figures"]
EPOCHS = 8


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _numbers(out) -> dict:
    """What an uninterrupted run and a resumed one must share: every number but the timings,
    and the trained model and optimizer bit for bit."""
    metrics = _metrics(out)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    return {
        "epochs": [{k: v for k, v in record.items() if k != "seconds"} for record in metrics["epochs"]],
        "steps": [metrics[k] for k in ("step_losses", "step_recon", "step_kl", "step_beta")],
        "final": metrics["final"],
        "model": state["model"],
        "optimizer": state["optimizer"]["state"],
    }


def _assert_same_run(out, reference):
    got, want = _numbers(out), reference
    assert got["epochs"] == want["epochs"]
    assert got["steps"] == want["steps"]
    assert got["final"] == want["final"]
    for name, value in want["model"].items():
        assert torch.equal(got["model"][name], value), name
    for index, state in want["optimizer"].items():
        for key, value in state.items():
            assert torch.equal(got["optimizer"][index][key], value), (index, key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of OPTIONS."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert train.main([*OPTIONS, "--quiet", "--out", str(out)]) == 0
    return _numbers(out)


def _start(out, *extra):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vae_ext", "train", *OPTIONS, "--out", str(out), *extra]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(stream, start: str, process) -> str:
    for line in stream:
        if line.startswith(start):
            return line
    process.wait(timeout=60)
    raise AssertionError(f"no line starting {start!r}; exit {process.returncode}: {process.stderr.read()[-2000:]}")


def _check_checkpoint(out) -> dict | None:
    """After a kill: the checkpoint is absent (killed before the first epoch ended) or complete
    and consistent, and metrics.json agrees with it (or is one epoch behind: killed between the two)."""
    path = out / "checkpoint.pt"
    if not path.exists():
        assert not (out / "metrics.json").exists()
        return None
    state = checkpoint.read_checkpoint(path)
    records = state["epoch_records"]
    assert state["epochs"] == len(records) and [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert len(state["steps"]["loss"]) == len(state["steps"]["beta"]) == state["epochs"] * 43
    assert state["step"] == state["epochs"] * 43 + state["batch"]
    if (out / "metrics.json").exists():
        assert len(records) - len(_metrics(out)["epochs"]) in (0, 1)
    leftovers = atomic.temporaries(path) + atomic.temporaries(out / "metrics.json")
    assert len(leftovers) <= 1, leftovers  # at most the one being written when the kill came
    return state


def test_sigkill_after_epoch_two_then_resume_equals_the_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "run"
    process = _start(out)
    _wait_for_line(process.stdout, f"epoch 2/{EPOCHS}", process)  # printed once epoch 2 is saved
    process.kill()
    process.wait(timeout=60)
    state = _check_checkpoint(out)
    assert state is not None and 2 <= state["epochs"] < EPOCHS
    assert train.main(["--out", str(out), *RESUME]) == 0
    _assert_same_run(out, reference)
    assert not atomic.temporaries(out / "checkpoint.pt") and not atomic.temporaries(out / "metrics.json")


def test_sigterm_mid_epoch_saves_exits_and_resumes_exactly(tmp_path, reference):
    out = tmp_path / "run"
    process = _start(out, "--progress-every", "0")
    _wait_for_line(process.stderr, f"epoch 2/{EPOCHS}: step 2/43", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM at epoch 2, step ")
    assert last.endswith(f"resume with: python -m vae_ext train --out {out} --resume")
    state = _check_checkpoint(out)
    assert state["epochs"] == 1 and 0 < state["batch"] < 43  # in the middle of epoch 2
    assert _metrics(out)["complete"] is False and len(_metrics(out)["epochs"]) == 1
    assert train.main(["--out", str(out), *RESUME]) == 0
    _assert_same_run(out, reference)


def test_sigint_stops_at_the_end_of_the_step_it_came_in(tmp_path, reference, monkeypatch, capsys):
    """Ctrl-C in step 5 of epoch 3 (sent from inside, so the step is known): saved after that step."""
    from vae_ext.train.progress import Progress

    step = Progress.step

    def step_then_interrupt(self, read_loss):
        step(self, read_loss)
        if (self.epoch, self.done) == (2, 5):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Progress, "step", step_then_interrupt)
    out = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    assert train.main([*OPTIONS, "--out", str(out), "--progress-every", "1000"]) == 130
    assert signal.getsignal(signal.SIGINT) is handler  # the run leaves the handlers as it found them
    hint = f"resume with: python -m vae_ext train --out {out} --resume"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"stopped by SIGINT at epoch 3, step 5: checkpoint saved; {hint}"
    ]
    state = _check_checkpoint(out)
    assert (state["epochs"], state["batch"], state["step"]) == (2, 5, 2 * 43 + 5)
    monkeypatch.undo()
    assert train.main(["--out", str(out), *RESUME]) == 0
    _assert_same_run(out, reference)


def test_sigkill_at_random_moments_leaves_a_checkpoint_to_resume_from(tmp_path, reference):
    """Two kills at random moments, each resumed; before each kill the run is also frozen
    (SIGSTOP) at two earlier random moments and its files checked: what a SIGKILL there would leave."""
    rng = random.Random(20)
    out = tmp_path / "run"
    for _ in range(2):
        process = _start(out, *(["--resume"] if (out / "checkpoint.pt").exists() else []))
        _wait_for_line(process.stdout, "VAE (mlp", process)  # set up: training starts now
        for _ in range(2):
            time.sleep(rng.uniform(0.0, 0.1))
            process.send_signal(signal.SIGSTOP)
            _check_checkpoint(out)
            process.send_signal(signal.SIGCONT)
        time.sleep(rng.uniform(0.0, 0.1))
        process.kill()
        assert process.wait(timeout=60) == -signal.SIGKILL  # killed while it ran, not after it ended
        _check_checkpoint(out)
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    assert train.main([*OPTIONS, "--out", str(out), "--quiet", *resume]) == 0
    _assert_same_run(out, reference)


def test_resume_takes_the_runs_options_and_refuses_other_values(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        train.main([*OPTIONS, "--epochs", "1", "--warmup", "none", "--iwae-k", "0", "--quiet", "--out", str(out)]) == 0
    )
    saved = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    for option, value in (("--lr", "0.01"), ("--hidden", "16,8"), ("--seed", "8"), ("--warmup", "linear")):
        assert train.main(["--out", str(out), "--resume", option, value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {option} {value} differs from the run's ") and option + " off" in err
    assert train.main(["--out", str(out), "--resume", "--compile"]) == 2
    assert "--compile True differs from the run's False" in capsys.readouterr().err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    torch.save({**state, "world_size": 2}, out / "checkpoint.pt")
    assert train.main(["--out", str(out), "--resume"]) == 2
    assert "the run had 2 process(es), this one has 1" in capsys.readouterr().err
    (out / "checkpoint.pt").write_bytes(saved)
    # Without --resume an existing run is not overwritten.
    assert train.main([*OPTIONS, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a run" in err and "--resume" in err and "another --out" in err
    assert (out / "checkpoint.pt").read_bytes() == saved


def test_epochs_may_grow_only_when_nothing_depends_on_the_total(tmp_path, capsys):
    constant = [*OPTIONS, "--warmup", "none", "--iwae-k", "0", "--quiet"]
    longer, shorter = tmp_path / "longer", tmp_path / "straight"
    assert train.main([*constant, "--epochs", "1", "--out", str(longer)]) == 0
    assert train.main(["--out", str(longer), *RESUME, "--epochs", "2"]) == 0
    assert train.main([*constant, "--epochs", "2", "--out", str(shorter)]) == 0
    assert _numbers(longer)["epochs"] == _numbers(shorter)["epochs"]
    assert _numbers(longer)["steps"] == _numbers(shorter)["steps"]
    capsys.readouterr()
    assert train.main(["--out", str(longer), "--resume", "--epochs", "1"]) == 2
    assert "--epochs 1: the run has already trained 2 epoch(s)" in capsys.readouterr().err

    warm = tmp_path / "warm"
    assert train.main([*OPTIONS, "--epochs", "1", "--iwae-k", "0", "--quiet", "--out", str(warm)]) == 0
    assert train.main(["--out", str(warm), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 2 differs from the run's 1, and --warmup linear spreads β over the run's total" in err


def test_resume_of_a_finished_run_repairs_metrics_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([*OPTIONS, "--epochs", "1", "--iwae-k", "0", "--quiet", "--out", str(out)]) == 0
    before = _metrics(out)
    (out / "metrics.json").write_text('{"epochs": [')  # as a broken copy would be
    assert train.main(["--out", str(out), *RESUME]) == 0
    after = _metrics(out)
    for key in ("epochs", "step_losses", "step_beta", "final", "config", "data"):
        assert after[key] == before[key], key
    assert after["complete"] is True
    assert not list(out.glob("*.png"))  # --no-figures


def test_resume_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    path = out / "checkpoint.pt"
    assert train.main(["--out", str(out), "--resume"]) == 2
    assert capsys.readouterr().err == f"error: {path}: no such file\n"
    for content, what in ((b"not a checkpoint", "not a readable checkpoint"), (b"", "not a readable checkpoint")):
        path.write_bytes(content)
        assert train.main(["--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: {what}") and err.count("\n") == 1
    torch.save({"model": {}}, path)
    assert train.main(["--out", str(out), "--resume"]) == 2
    assert capsys.readouterr().err == f"error: {path}: not a vae_ext train checkpoint (format None)\n"
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--resume"])
    assert exit_info.value.code == 2 and "--resume needs --out" in capsys.readouterr().err


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.json"
    atomic.write_atomic(path, lambda f: f.write("old"), binary=False)

    def broken(f):
        f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.write_atomic(path, broken, binary=False)
    assert path.read_text() == "old" and atomic.temporaries(path) == []
    leftover = tmp_path / ".file.json.abc123.tmp"  # what a SIGKILL in the middle of a write leaves
    leftover.write_text("half")
    assert atomic.temporaries(path) == [str(leftover)]
    atomic.remove_temporaries(path)
    assert not leftover.exists() and path.read_text() == "old"


def test_a_checkpoint_of_the_first_format_still_loads_but_cannot_be_resumed(tmp_path, capsys):
    args = train.parse_args(OPTIONS)
    config = train.model_config(args, (1, 8, 8))
    model = train.build_model(config)
    out = tmp_path / "old"
    out.mkdir()
    old = {"format": "vae_ext.train/1", "config": config, "model": model.state_dict(), "epochs": 3, "args": {}}
    torch.save(old, out / "checkpoint.pt")
    loaded, state = train.load_checkpoint(out / "checkpoint.pt")
    assert state["epochs"] == 3
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert train.main(["--out", str(out), "--resume"]) == 2
    assert "saved no run state (format 1): it cannot be resumed" in capsys.readouterr().err
