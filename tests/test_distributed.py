"""Data-parallel training over two CPU processes (gloo) against one process on the same data.

ε is made deterministic by passing it explicitly (module test) or by training an AE, which
samples nothing (command-line test).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import vae_ext
from vae_ext import train

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD = 2
BATCH, D, L = 8, 12, 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, 2 * L))
    decoder = nn.Sequential(nn.Linear(L, 16), nn.Tanh(), nn.Linear(16, D))
    model = vae_ext.VAE(encoder, decoder, latent_dim=L, prior="learnable", beta=0.7).double()
    with torch.no_grad():
        model.latent.prior_mu.copy_(torch.linspace(-0.5, 0.5, L))
    return model


def _full_batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(BATCH, D, generator=g, dtype=torch.float64), torch.randn(
        BATCH, L, generator=g, dtype=torch.float64
    )


def _worker(rank, port, out_dir):
    """One data-parallel process: its half of the batch (and of ε) through a DDP-wrapped VAE."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = _model()
        ddp = DistributedDataParallel(model)
        x, eps = _full_batch()
        half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        out = ddp(x[half], eps=eps[half])
        out.loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        torch.save({"loss": out.loss.detach(), "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_and_loss_match_one_process(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    model = _model()
    x, eps = _full_batch()
    out = model(x, eps=eps)
    out.loss.backward()
    # Equal halves and a batch-mean loss: the mean of the ranks' losses is the full-batch loss,
    # and DDP's averaged gradients are the full-batch gradients, on every rank.
    mean_loss = sum(r["loss"] for r in ranks) / WORLD
    torch.testing.assert_close(mean_loss, out.loss.detach(), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ranks[0]["loss"], ranks[1]["loss"])  # the halves do differ
    for name, p in model.named_parameters():
        assert p.grad.abs().sum() > 0, name
        for r in ranks:
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-10, atol=1e-12, msg=name)


def _train_args(out, batch_size):
    return [
        "--model", "ae", "--limit", "142", "--epochs", "2", "--batch-size", str(batch_size), "--hidden", "64,32",
        "--seed", "5", "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip


def test_torchrun_two_processes_match_one_process(tmp_path):
    # 142 samples: 128 train (no padding, no partial batch for 2 x 16), 14 test.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD)]
    command += ["-m", "vae_ext", "train", *_train_args(tmp_path / "ddp", 16)]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("final:") == 1  # only rank 0 reports and writes

    assert train.main(_train_args(tmp_path / "single", 32)) == 0
    ddp, single = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("ddp", "single"))
    assert ddp["world_size"] == WORLD and single["world_size"] == 1
    for key in ("train_loss", "test_loss"):
        for a, b in zip(ddp["epochs"], single["epochs"]):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    ddp_state = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["model"]
    single_state = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)["model"]
    torch.manual_seed(5)  # the command seeds with --seed right before it builds the model
    initial = train.build_model(single["config"]).state_dict()
    for name, value in single_state.items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-4, atol=1e-5, msg=name)
        assert not torch.equal(value, initial[name]), f"{name} was not trained"


# ------------------------------------------------------------------- stop and resume under DDP

VAE_OPTIONS = [
    "--limit", "70", "--size", "8", "--hidden", "16", "--latent-dim", "3", "--batch-size", "1", "--epochs", "3",
    "--iwae-k", "0", "--seed", "4", "--threads", "1", "--device", "cpu", "--progress-every", "0", "--no-figures",
]  # fmt: skip


def _launch(out, *extra):
    """The two processes torchrun would start (same environment variables), so that a test can
    signal one of them."""
    port = _free_port()
    processes = []
    for rank in range(WORLD):
        env = {
            **os.environ,
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
        }
        command = [sys.executable, "-m", "vae_ext", "train", *VAE_OPTIONS, "--out", str(out), *extra]
        processes.append(subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True))
    return processes


def _finish(processes):
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    return [code for code, _ in results], [err for _, err in results]


def test_sigterm_to_one_rank_stops_every_rank_at_one_step_and_resumes_exactly(tmp_path):
    # 70 samples: 63 train (32 a rank with padding, 32 steps an epoch), 7 test.
    codes, errors = _finish(_launch(tmp_path / "whole"))
    assert codes == [0, 0], errors[0][-3000:]

    stopped = _launch(tmp_path / "stopped")
    for line in stopped[0].stderr:  # only rank 0 shows progress
        if line.startswith("epoch 2/3: step 2/32"):
            break
    stopped[1].send_signal(signal.SIGTERM)  # rank 1 only: the reduced flag stops rank 0 too
    codes, errors = _finish(stopped)
    assert codes == [143, 143], errors
    assert not any("Traceback" in err for err in errors)
    hint = f"resume with: torchrun --nproc_per_node 2 -m vae_ext train --out {tmp_path / 'stopped'} --resume"
    assert errors[0].strip().splitlines()[-1].startswith("stopped by SIGTERM at epoch 2, step ")
    assert errors[0].strip().endswith(hint)
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert state["epochs"] == 1 and 0 < state["batch"] < 32 and len(state["ranks"]) == WORLD
    assert not torch.equal(state["ranks"][0]["generator"], state["ranks"][1]["generator"])

    codes, errors = _finish(_launch(tmp_path / "stopped", "--resume"))
    assert codes == [0, 0], errors[0][-3000:]
    whole, resumed = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("whole", "stopped"))
    for key in ("step_losses", "step_recon", "step_kl", "step_beta", "final"):
        assert resumed[key] == whole[key], key
    for a, b in zip(resumed["epochs"], whole["epochs"]):
        assert {**a, "seconds": 0} == {**b, "seconds": 0}
    one, other = (
        torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"] for run in ("whole", "stopped")
    )
    assert all(torch.equal(one[name], other[name]) for name in one)
