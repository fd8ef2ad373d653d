"""The training loop: one optimizer step, one epoch over this process's share, the test pass."""

from __future__ import annotations

import contextlib
import math

import torch
from torch.utils.data.distributed import DistributedSampler

from ..schedules import make_beta_schedule
from .cli import AMP_DTYPES
from .distributed import unwrap


def autocast(device: torch.device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def batch_indices(sampler, batch_size: int) -> list[torch.Tensor]:
    order = torch.tensor(list(iter(sampler)), dtype=torch.int64)
    return list(order.split(batch_size))


def on_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole data set on the device when it is small (index there), else left on the CPU."""
    return tensor.to(device) if tensor.numel() * tensor.element_size() < 2**30 else tensor


def batch_parts(out, is_vae: bool) -> torch.Tensor:
    """[loss, recon, kl] batch means, left on the device (no sync); an AE's loss is all recon."""
    values = (out.loss, out.recon_loss, out.kl) if is_vae else (out.loss, out.loss, torch.zeros_like(out.loss))
    return torch.stack([v.detach().float() for v in values])


def with_count(sums: torch.Tensor, count: int) -> torch.Tensor:
    return torch.cat((sums, torch.tensor([float(count)], device=sums.device)))


def means(sums: torch.Tensor) -> dict:
    loss, recon, kl, n = sums.tolist()
    n = max(n, 1.0)
    return {"loss": loss / n, "recon": recon / n, "kl": kl / n}


class Trainer:
    """Adam on a (possibly DDP-wrapped) model, with the β schedule, autocast and the seeded
    shuffle shared by one process or many (each takes its share of the same global batches)."""

    def __init__(self, args, procs, model, train_images: torch.Tensor):
        self.args, self.procs = args, procs
        self.is_vae = args.model == "vae"
        self.model = model
        # Compiled, the forward draws ε from the default generator: a user generator= would be
        # a graph break in every step (docs/design.md section 4).
        self.compiled = None
        if args.compile:
            torch.manual_seed(args.seed * 65536 + procs.rank)
            self.compiled = torch.compile(model)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        self.amp_dtype = AMP_DTYPES[args.amp]
        self.scaler = torch.amp.GradScaler(procs.device.type, enabled=self.amp_dtype == torch.float16)
        self.train_images = train_images
        self.sampler = DistributedSampler(
            range(train_images.shape[0]), num_replicas=procs.world_size, rank=procs.rank, seed=args.seed
        )
        self.steps_per_epoch = math.ceil(len(self.sampler) / args.batch_size)
        self.schedule = make_beta_schedule(args.warmup, args.beta, self.steps_per_epoch * args.epochs)
        self.generator = torch.Generator(procs.device).manual_seed(args.seed * 65536 + procs.rank)
        self.step = 0
        self.steps = {"loss": [], "recon": [], "kl": [], "beta": []}  # per optimizer step, this process

    def _forward(self, model, x, generator):
        if self.compiled is not None and model is self.model:
            return self.compiled(x)
        return model(x, generator=generator) if self.is_vae else model(x)

    def train_epoch(self, epoch: int, progress) -> torch.Tensor:
        """[loss, recon, kl, n] sums over the epoch, added up over every process."""
        self.model.train()
        self.sampler.set_epoch(epoch)
        batches = batch_indices(self.sampler, self.args.batch_size)
        progress.start_epoch(epoch, len(batches))
        sums, count, parts = torch.zeros(3, device=self.procs.device), 0, []
        for idx in batches:
            x = self.train_images[idx.to(self.train_images.device)].to(self.procs.device, non_blocking=True)
            out = self.train_step(x)
            parts.append(batch_parts(out, self.is_vae))
            sums += parts[-1] * x.shape[0]
            count += x.shape[0]
            progress.step(lambda part=parts[-1]: float(part[0]))  # read (a device sync) only when shown
        progress.end_epoch()
        for key, column in zip(("loss", "recon", "kl"), torch.stack(parts).T.tolist()):
            self.steps[key].extend(column)
        return self.procs.all_sum(with_count(sums, count))

    def train_step(self, x: torch.Tensor):
        beta = self.schedule(self.step) if self.is_vae else 0.0
        if self.is_vae:
            unwrap(self.model).beta = beta
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.procs.device, self.amp_dtype):
            out = self._forward(self.model, x, self.generator)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps["beta"].append(beta)
        self.step += 1
        return out

    @torch.no_grad()
    def evaluate(self, test_images: torch.Tensor) -> torch.Tensor:
        """Test [loss, recon, kl, n] sums over every process's share; the VAE loss is the plain
        negative ELBO (β = 1, no free bits), with a fixed ε seed so epochs compare."""
        model = unwrap(self.model).eval()
        share = test_images[self.procs.rank :: self.procs.world_size]
        generator = torch.Generator(self.procs.device).manual_seed(self.args.seed + 1)
        sums = torch.zeros(3, device=self.procs.device)
        for x in share.split(512):
            x = x.to(self.procs.device)
            with autocast(self.procs.device, self.amp_dtype):
                out = self._forward(model, x, generator)
            if self.is_vae:
                out = out._replace(loss=out.recon_loss + out.kl)
            sums += batch_parts(out, self.is_vae) * x.shape[0]
        return self.procs.all_sum(with_count(sums, share.shape[0]))
