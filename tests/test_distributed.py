"""Data-parallel training over two CPU processes (gloo) against one process on the same data.

ε is made deterministic by passing it explicitly (module test) or by training an AE, which
samples nothing (command-line test).
"""

from __future__ import annotations

import json
import os
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
