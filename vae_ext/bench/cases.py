"""What one benchmark row runs: the sizes, dtypes and passes, the inputs and the timed call."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .suites import OPS

SIZE_SETS = {
    "quick": ((128, 32), (4096, 256)),
    "full": ((128, 32), (4096, 256), (16384, 1024)),
    "gpu": ((256, 64), (4096, 512), (65536, 1024), (64, 16, 64, 64)),
}
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
IMPLS = ("eager", "compile", "vae_ext", "fresh", "copy")
KERNEL_IMPLS = ("eager", "compile", "vae_ext")
PASSES = ("fwd", "bwd", "fwd+bwd")
EPS_MODES = ("sampled", "given")
NO_EPS = "none"  # eps mode of an op that draws no noise (gaussian_kl)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def shape_text(shape) -> str:
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True)
class Case:
    op: str
    pass_name: str
    eps: str
    dtype: torch.dtype
    shape: tuple

    @property
    def training(self) -> bool:
        return self.pass_name != "fwd"

    def describe(self) -> str:
        return f"{self.op} {self.pass_name} eps={self.eps} {dtype_name(self.dtype)} {shape_text(self.shape)}"


@dataclass
class Inputs:
    mu: torch.Tensor
    logvar: torch.Tensor
    eps: torch.Tensor
    grad_z: torch.Tensor
    grad_kl: torch.Tensor


def make_inputs(shape, dtype, device, seed=0) -> Inputs:
    """Fixed random inputs and output gradients, shared by every impl of a (dtype, shape)."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def randn(size, dt=dtype):
        return torch.randn(size, generator=generator, device=device, dtype=dt)

    return Inputs(
        mu=randn(shape),
        logvar=randn(shape).mul_(0.5),
        eps=randn(shape),
        grad_z=randn(shape),
        grad_kl=randn(shape[:1], torch.float32),
    )


def make_cases(config, dtype, shape) -> list[Case]:
    cases = []
    for op in config.ops:
        eps_modes = config.eps_modes if OPS[op].uses_eps else (NO_EPS,)
        for eps in eps_modes:
            cases += [Case(op, pass_name, eps, dtype, shape) for pass_name in config.passes]
    return cases


def _output_grad(name, output, data):
    grad = data.grad_z if name == "z" else data.grad_kl
    return grad.to(output.dtype)


def build_step(fn, case: Case, data: Inputs):
    """A no-argument callable running one timed call of ``case`` (its graph built here for "bwd")."""
    eps = data.eps if case.eps == "given" else None
    if not case.training:
        return lambda: fn(data.mu, data.logvar, eps)
    mu = data.mu.detach().requires_grad_()
    logvar = data.logvar.detach().requires_grad_()
    outputs = fn(mu, logvar, eps)
    grads = tuple(_output_grad(name, out, data) for name, out in zip(OPS[case.op].outputs, outputs))
    if case.pass_name == "bwd":
        return lambda: torch.autograd.grad(outputs, (mu, logvar), grads, retain_graph=True)
    return lambda: torch.autograd.grad(fn(mu, logvar, eps), (mu, logvar), grads)


def _fresh_outputs(reads, writes):
    """``writes`` fresh outputs reading each tensor of ``reads`` once: the first output combines the
    first len(reads) - writes + 1 inputs (add, addcmul), each further one negates one input; no
    output ([B]-sized results are not counted): a row-wise dot product of two inputs."""
    if writes == 0:
        return (torch.linalg.vecdot(reads[0].flatten(1), reads[1].flatten(1)),)
    head, rest = reads[: len(reads) - writes + 1], reads[len(reads) - writes + 1 :]
    first = {1: torch.neg, 2: torch.add, 3: torch.addcmul}[len(head)](*head)
    return (first, *(torch.neg(t) for t in rest))


def build_fresh_step(case: Case, data: Inputs):
    """The fresh-output floor of ``case``: its op's traffic (BenchOp.traffic) as elementwise ops that
    allocate their outputs, pass by pass: what any op that returns new tensors pays at least (on the
    CPU the fresh pages fault in, a cost ``copy_`` into an existing tensor does not have)."""
    traffic = OPS[case.op].traffic
    extra = ("eps",) if case.eps == "given" else ()
    passes = [
        (tuple(getattr(data, name) for name in traffic[p][0] + extra), traffic[p][1]) for p in case.pass_name.split("+")
    ]
    return lambda: [_fresh_outputs(reads, writes) for reads, writes in passes]


def build_copy_step(data: Inputs):
    source = data.grad_z
    target = torch.empty_like(source)
    return lambda: target.copy_(source)
