"""This process's place in a torchrun job, and the device it trains on."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def select_device(arg: str, local_rank: int | None = None) -> torch.device:
    if arg == "auto":
        arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(arg)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch.cuda.is_available() is False")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    return device


class Processes:
    """This process's rank in a torchrun job (rank 0 of 1 when run plainly); gloo on the CPU,
    NCCL on CUDA."""

    def __init__(self, device_arg: str):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
        self.world_size = world
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = select_device(device_arg, local_rank if world > 1 else None)
        if world > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def all_max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def gather(self, obj) -> list | None:
        """Every process's ``obj`` as a list on rank 0 (None elsewhere); every process calls it."""
        if not self.distributed:
            return [obj]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0)
        return gathered

    def main_first(self, work) -> None:
        """``work()`` on rank 0 while the others wait; a failure there (ValueError) is raised on
        every rank, so none waits for a rank that gave up."""
        failed = torch.zeros(1, device=self.device)
        if self.is_main:
            try:
                work()
            except ValueError:
                failed += 1
                self.all_max(failed)
                raise
        if self.all_max(failed).item() and not self.is_main:
            raise ValueError("rank 0 could not prepare the data (its error is in rank 0's output)")

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in DistributedDataParallel when there is more than one process."""
        if not self.distributed:
            return model
        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model
