"""The training loop: one optimizer step, one epoch over this process's share, the test pass,
and the loop's state as a checkpoint holds it (so a resumed run continues bit for bit)."""

from __future__ import annotations

import math

import torch
from torch.utils.data.distributed import DistributedSampler

from ..schedules import make_beta_schedule
from .amp import AMP_DTYPES, autocast
from .distributed import unwrap
from .stopping import Divergence

TERMS = ("loss", "reconstruction", "KL")  # the columns of batch_parts, as messages name them
# Under DDP on CUDA the stop flag is reduced (a host sync) only every this many steps; on the CPU
# and in one process it is read after every step at no cost.
CUDA_STOP_CHECK_EVERY = 16
# fp16: the gradient scaler skips a step whose loss is not finite; this many in a row is divergence.
FP16_SKIP_LIMIT = 100


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


def _nonfinite_term(row: list[float]) -> str | None:
    """The term a non-finite [loss, recon, kl] row names: the reconstruction or the KL when one
    of them is not finite, else the loss (β·KL or the free-bits sum overflowed)."""
    if all(math.isfinite(v) for v in row):
        return None
    for name, value in zip(TERMS[1:], row[1:]):
        if not math.isfinite(value):
            return name
    return TERMS[0]


class Trainer:
    """Adam on a (possibly DDP-wrapped) model, with the β schedule, autocast and the seeded
    shuffle shared by one process or many (each takes its share of the same global batches).

    The epoch in progress (``epoch``, ``batch`` batches done, their sums and per-step parts) is
    state, so that a stop in the middle of an epoch can be checkpointed and resumed exactly.
    """

    def __init__(self, args, procs, model, train_images: torch.Tensor, stop=None):
        self.args, self.procs = args, procs
        self.is_vae = args.model == "vae"
        self.model = model
        self.stop = stop  # a StopRequests (its signum is set by SIGINT / SIGTERM), or None
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
        # The data order is a function of (--seed, epoch): the sampler seeds its generator with
        # seed + epoch in set_epoch, so the epoch counter is all a resumed run needs of it.
        self.sampler = DistributedSampler(
            range(train_images.shape[0]), num_replicas=procs.world_size, rank=procs.rank, seed=args.seed
        )
        self.steps_per_epoch = math.ceil(len(self.sampler) / args.batch_size)
        total_steps = self.steps_per_epoch * args.epochs
        try:
            self.schedule = make_beta_schedule(args.warmup, args.beta, total_steps)
        except ValueError as error:
            raise ValueError(
                f"--warmup {args.warmup}: {error} (--epochs {args.epochs} × {self.steps_per_epoch} steps per epoch)"
            ) from error
        self.generator = torch.Generator(procs.device).manual_seed(args.seed * 65536 + procs.rank)
        self.step = 0
        self.steps = {"loss": [], "recon": [], "kl": [], "beta": []}  # per optimizer step, this process
        self.epoch = 0
        self.skips_in_a_row = 0  # fp16: steps skipped for a non-finite loss, the latest ones
        self._reset_epoch()
        # The CPU checks every step for free; CUDA only where it already waits for the device.
        self.check_every_step = procs.device.type == "cpu" or self.scaler.is_enabled()

    def _reset_epoch(self):
        self.batch = 0
        self.epoch_sums = torch.zeros(3, device=self.procs.device)
        self.epoch_count = 0
        self.epoch_parts: list[torch.Tensor] = []
        self.epoch_betas: list[float] = []
        self.epoch_skipped: list[bool] = []  # fp16: the steps the gradient scaler skipped
        self.checked = 0  # epoch_parts[:checked] are known finite (or skipped)

    def train_epoch(self, progress) -> torch.Tensor | None:
        """Trains on the rest of epoch ``self.epoch``: its [loss, recon, kl, n] sums added up over
        every process, or None when a stop request ended it early (the state is then that of the
        end of the last step: checkpoint it). Raises Divergence for a non-finite loss."""
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        batches = batch_indices(self.sampler, self.args.batch_size)
        progress.start_epoch(self.epoch, len(batches), done=self.batch)
        for idx in batches[self.batch :]:
            x = self.train_images[idx.to(self.train_images.device)].to(self.procs.device, non_blocking=True)
            part = self.train_batch(x)
            progress.step(lambda part=part: float(part[0]))  # read (a device sync) only when shown
            if self._stop_after_step(last=self.batch == len(batches)):
                progress.end_epoch()
                return None
        progress.end_epoch()
        self.check_finite()
        for key, column in zip(("loss", "recon", "kl"), torch.stack(self.epoch_parts).T.tolist()):
            self.steps[key].extend(column)
        self.steps["beta"].extend(self.epoch_betas)
        sums = with_count(self.epoch_sums, self.epoch_count)
        self.epoch += 1
        self._reset_epoch()
        return self.procs.all_sum(sums)

    def train_batch(self, x: torch.Tensor) -> torch.Tensor:
        """One step on batch ``x``, added to the epoch in progress; its [loss, recon, kl] (on the device)."""
        skipped = self.train_step(x)
        part = batch_parts(self._last_out, self.is_vae)
        self._last_out = None
        self.epoch_parts.append(part)
        self.epoch_skipped.append(skipped)
        self.epoch_sums += part * x.shape[0]
        self.epoch_count += x.shape[0]
        self.batch += 1
        return part

    def train_step(self, x: torch.Tensor) -> bool:
        """One optimizer step; True when the fp16 gradient scaler skipped it (inf / NaN gradients)."""
        beta = self.schedule(self.step) if self.is_vae else 0.0
        if self.is_vae:
            unwrap(self.model).beta = beta
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.procs.device, self.amp_dtype):
            out = self._forward_train(x)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.epoch_betas.append(beta)
        self.step += 1
        self._last_out = out
        return scale is not None and self.scaler.get_scale() < scale

    def _forward_train(self, x):
        if self.compiled is not None:
            return self.compiled(x)
        return self.model(x, generator=self.generator) if self.is_vae else self.model(x)

    def _stop_after_step(self, last: bool) -> bool:
        """After each step: Divergence for a non-finite loss (where it is checked: see
        check_every_step), else whether to stop here for a signal (never after the last step of
        the epoch: the epoch then ends and is saved as usual). Under DDP both facts are one
        reduced flag, so every process takes the same decision at the same step."""
        signum = self.stop.signum if self.stop is not None else 0
        if not self.check_every_step and not self.procs.distributed:  # one CUDA process: no sync
            return bool(signum) and not last
        if not self.check_every_step and self.batch % CUDA_STOP_CHECK_EVERY:  # DDP on CUDA, between checks
            return False
        signum = self._agree(self._scan(), signum)
        return bool(signum) and not last

    def check_finite(self) -> None:
        """Divergence for the first step of this epoch (not yet checked) whose loss is not finite,
        unless the fp16 gradient scaler skipped it. Under DDP every process learns of it."""
        self._agree(self._scan(), 0)

    def stop_agreed(self) -> bool:
        """Whether a stop was asked for (a signal to any process), the same answer everywhere."""
        return bool(self._agree(None, self.stop.signum if self.stop is not None else 0))

    def _scan(self) -> tuple[int, str] | None:
        """(index in the epoch, term) of the first new step whose loss is not finite and that the
        fp16 scaler did not skip (or that makes FP16_SKIP_LIMIT skips in a row); None if none."""
        found = None
        if self.checked < len(self.epoch_parts):
            rows = torch.stack(self.epoch_parts[self.checked :]).tolist()  # a sync; callers choose when
            for offset, row in enumerate(rows):
                index = self.checked + offset
                term = _nonfinite_term(row)
                if term is None:
                    self.skips_in_a_row = 0
                elif self.epoch_skipped[index] and self.skips_in_a_row + 1 < FP16_SKIP_LIMIT:
                    self.skips_in_a_row += 1
                else:
                    found = (index, term)
                    break
            self.checked = len(self.epoch_parts)
        return found

    def _agree(self, found: tuple[int, str] | None, signum: int) -> int:
        """Raises Divergence when any process found one; else the stop signal any process got
        (0: none). One all-reduce under DDP: [signal, term code, -(first bad index)], whose
        maximum over the processes is a signal, a term and the earliest bad step."""
        if self.procs.distributed:
            code = 0 if found is None else 1 + TERMS.index(found[1])
            index = found[0] if found is not None else 2**40
            flag = torch.tensor([signum, code, -index], dtype=torch.float64, device=self.procs.device)
            signum, code, negative_index = (int(v) for v in self.procs.all_max(flag).tolist())
            found = None if code == 0 else (-negative_index, TERMS[code - 1])
            if signum and self.stop is not None:
                self.stop.signum = self.stop.signum or signum
        if found is not None:
            raise self._divergence(*found)
        return signum

    def _divergence(self, index: int, term: str) -> Divergence:
        first_step = self.step - len(self.epoch_parts)  # the run's step count before this epoch's
        return Divergence(self.epoch + 1, index + 1, term, first_step + index + 1)

    def check_test(self, test: dict) -> None:
        """Divergence when the test pass after the epoch just done is not finite: its last step's
        loss was finite, but the weights that step left are not usable (the same on every rank:
        the test sums are reduced)."""
        term = _nonfinite_term([test["loss"], test["recon"], test["kl"]])
        if term is not None:
            raise Divergence(self.epoch, self.steps_per_epoch, term, self.step, after_epoch=True)

    @torch.no_grad()
    def evaluate(self, test_images: torch.Tensor) -> torch.Tensor:
        """Test [loss, recon, kl, n] sums over every process's share; the VAE loss is the plain
        negative ELBO (β = 1, no free bits), with a fixed ε seed so epochs compare. Always the
        eager model with its own generator (also under --compile: the compiled forward would draw
        from, and so advance, the default generator the training ε come from)."""
        model = unwrap(self.model).eval()
        share = test_images[self.procs.rank :: self.procs.world_size]
        generator = torch.Generator(self.procs.device).manual_seed(self.args.seed + 1)
        sums = torch.zeros(3, device=self.procs.device)
        for x in share.split(512):
            x = x.to(self.procs.device)
            with autocast(self.procs.device, self.amp_dtype):
                out = model(x, generator=generator) if self.is_vae else model(x)
            if self.is_vae:
                out = out._replace(loss=out.recon_loss + out.kl)
            sums += batch_parts(out, self.is_vae) * x.shape[0]
        return self.procs.all_sum(with_count(sums, share.shape[0]))

    # -- the state a checkpoint holds ---------------------------------------------------------

    def rank_state(self) -> dict:
        """This process's own part of the state: its random states and its share of the epoch."""
        device = self.procs.device
        parts = torch.stack(self.epoch_parts).cpu() if self.epoch_parts else torch.zeros(0, 3)
        return {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "generator": self.generator.get_state(),
            "epoch_sums": self.epoch_sums.cpu(),
            "epoch_count": self.epoch_count,
            "epoch_parts": parts,
            "epoch_skipped": list(self.epoch_skipped),
            "skips_in_a_row": self.skips_in_a_row,
        }

    def shared_state(self) -> dict:
        """The state every process holds the same copy of."""
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epochs": self.epoch,  # completed epochs
            "batch": self.batch,  # batches done in the next one (a stop in its middle)
            "epoch_betas": list(self.epoch_betas),
            # float64 holds each float32 loss and each β exactly, and a tensor saves fast
            "steps": {key: torch.tensor(values, dtype=torch.float64) for key, values in self.steps.items()},
        }

    def load_state(self, checkpoint: dict) -> None:
        """The state of ``checkpoint`` (shared_state and this rank's rank_state), random states last."""
        device = self.procs.device
        unwrap(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.step, self.epoch = checkpoint["step"], checkpoint["epochs"]
        self.steps = {key: values.tolist() for key, values in checkpoint["steps"].items()}
        self._reset_epoch()
        mine = checkpoint["ranks"][self.procs.rank]
        self.batch = checkpoint["batch"]
        self.epoch_betas = list(checkpoint["epoch_betas"])
        self.epoch_sums = mine["epoch_sums"].to(device)
        self.epoch_count = mine["epoch_count"]
        self.epoch_parts = [row.to(device) for row in mine["epoch_parts"]]
        self.epoch_skipped = list(mine["epoch_skipped"])
        self.checked = len(self.epoch_parts)
        self.skips_in_a_row = mine["skips_in_a_row"]
        torch.set_rng_state(mine["torch_rng"])
        if mine["cuda_rng"] is not None:
            torch.cuda.set_rng_state(mine["cuda_rng"], device)
        self.generator.set_state(mine["generator"])
