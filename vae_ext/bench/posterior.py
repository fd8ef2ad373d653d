"""Benchmark of the diffusers posterior: diffusers' eager ``DiagonalGaussianDistribution``
against vae_ext's (vae_ext.distributions), at Stable-Diffusion-like latents.

One step is what a KL-autoencoder training loop does with the posterior: build it from the
encoder's moments [B, 2C, H, W], ``z = posterior.sample()``, ``kl = posterior.kl()``, then the
backward of both (random upstream gradients). Reported per implementation and shape: median
and min time of the forward and of forward + backward, and the bytes autograd keeps for backward
(``torch.autograd.graph.saved_tensors_hooks``; distinct storages, so a view of the moments
counts once, as the moments).

``python -m vae_ext.posterior_bench [--device cpu|cuda] [--repeats N] [--dtype float32 ...]
[--json PATH] [--markdown]``
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import vae_ext
from vae_ext import distributions
from vae_ext.distributions import DiagonalGaussianDistribution

# (batch, latent channels, height, width): SD 1.x/2.x VAE latents of 512x512 images, and a
# 16-channel VAE (SD3 / FLUX style) at 1024x1024.
SD_SHAPES = ((8, 4, 64, 64), (8, 16, 128, 128))
IMPLS = ("diffusers", "vae_ext", "vae_ext_unclamped")
# AutoencoderKL's encoder hands channels_last moments to the posterior (its attention block's
# output layout reaches conv_out); NCHW-contiguous moments come from plain conv encoders.
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
_ROOT = Path(__file__).resolve().parent.parent


def diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def _diffusers_class():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution as DiffusersPosterior

    return DiffusersPosterior


def _posterior_step(cls):
    def step(moments):
        posterior = cls(moments)
        return posterior.sample(), posterior.kl()

    return step


def _unclamped_step(moments):
    # vae_ext's posterior path on the raw halves, without the logvar clamp's copy: what it
    # would cost with the clamp folded into the kernels (the lower bound of the "vae_ext" row).
    mean, logvar = moments.chunk(2, dim=1)
    return distributions._sample(mean, logvar), distributions._kl(mean, logvar)


def make_step(impl):
    """The step function (moments -> (z, kl)) of one implementation."""
    if impl == "diffusers":
        return _posterior_step(_diffusers_class())
    if impl == "vae_ext":
        return _posterior_step(DiagonalGaussianDistribution)
    if impl == "vae_ext_unclamped":
        return _unclamped_step
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def saved_bytes(step, moments):
    """(all, beyond the moments): bytes of the distinct storages autograd saves in one step."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(moments)
    total = sum(storages.values())
    return total, total - storages.get(moments.untyped_storage().data_ptr(), 0)


class _Case:
    """One implementation's step on one set of moments, with its upstream gradients."""

    def __init__(self, impl, moments, shape, generator):
        self.impl, self.moments, self.step = impl, moments, make_step(impl)
        with torch.no_grad():  # the upstream gradient in z's layout, as a decoder's backward gives it
            z = self.step(moments)[0]
        self.grad_z = torch.empty_like(z).copy_(torch.randn(shape, generator=generator, device=moments.device))
        self.times = {"fwd": [], "fwd_bwd": []}

    def fwd(self):  # with autograd recording, as in training
        self.step(self.moments)

    def fwd_bwd(self):
        z, kl = self.step(self.moments)
        torch.autograd.grad((z, kl), self.moments, (self.grad_z, torch.full_like(kl, 0.5)))


def measure_group(impls, shape, dtype, device, repeats, warmup=2, layout="channels_last", seed=0):
    """One row per implementation on the same moments: median and min ms of the forward and of
    forward + backward, saved bytes. The implementations take turns within each repetition,
    so load from other processes falls on all of them alike."""
    batch, channels, height, width = shape
    generator = torch.Generator(device=device).manual_seed(seed)
    moments = torch.randn((batch, 2 * channels, height, width), generator=generator, device=device, dtype=dtype)
    moments = moments.contiguous(memory_format=LAYOUTS[layout]).requires_grad_(True)
    cases = [_Case(impl, moments, shape, generator) for impl in impls]
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for repetition in range(warmup + repeats):
        for case in cases:
            for phase in ("fwd", "fwd_bwd"):
                sync()
                start = time.perf_counter()
                getattr(case, phase)()
                sync()
                if repetition >= warmup:
                    case.times[phase].append(time.perf_counter() - start)
    latent_elements = batch * channels * height * width
    rows = []
    for case in cases:
        total, beyond = saved_bytes(case.step, moments)
        rows.append(
            {
                "impl": case.impl,
                "shape": list(shape),
                "layout": layout,
                "dtype": str(dtype).removeprefix("torch."),
                "fwd_ms": statistics.median(case.times["fwd"]) * 1e3,
                "fwd_bwd_ms": statistics.median(case.times["fwd_bwd"]) * 1e3,
                "min_fwd_ms": min(case.times["fwd"]) * 1e3,
                "min_fwd_bwd_ms": min(case.times["fwd_bwd"]) * 1e3,
                "repeats": repeats,
                "saved_bytes": total,
                "saved_bytes_beyond_moments": beyond,
                "saved_bytes_per_latent_element": beyond / latent_elements,
            }
        )
    return rows


def run_posterior_bench(
    device="cpu", repeats=20, shapes=SD_SHAPES, dtypes=(torch.float32,), impls=None, warmup=2, layouts=tuple(LAYOUTS)
):
    """Rows of ``measure_group`` for every layout, shape, dtype and implementation (diffusers'
    only when it is installed), with speedups over diffusers where both were measured."""
    if impls is None:
        impls = IMPLS if diffusers_available() else IMPLS[1:]
    rows = []
    for dtype, layout, shape in ((d, la, s) for d in dtypes for la in layouts for s in shapes):
        group = measure_group(impls, tuple(shape), dtype, device, repeats, warmup, layout)
        base = next((r for r in group if r["impl"] == "diffusers"), None)
        for row in group:
            if base is not None:
                row["speedup_vs_diffusers"] = base["fwd_bwd_ms"] / row["fwd_bwd_ms"]
                row["fwd_speedup_vs_diffusers"] = base["fwd_ms"] / row["fwd_ms"]
                row["min_speedup_vs_diffusers"] = base["min_fwd_bwd_ms"] / row["min_fwd_bwd_ms"]
        rows.extend(group)
    return rows


def format_markdown(rows) -> str:
    """A markdown table of run_posterior_bench's rows."""
    lines = [
        "| latent [B, C, H, W] | moments | dtype | posterior | fwd ms | fwd+bwd ms | fwd+bwd min ms "
        "| vs diffusers | saved for backward |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        speedup = row.get("speedup_vs_diffusers")
        speedup = "" if speedup is None else f"{speedup:.2f}×"
        lines.append(
            f"| {'×'.join(map(str, row['shape']))} | {row['layout']} | {row['dtype']} | {row['impl']} "
            f"| {row['fwd_ms']:.3g} | {row['fwd_bwd_ms']:.3g} | {row['min_fwd_bwd_ms']:.3g} | {speedup} "
            f"| {row['saved_bytes_per_latent_element']:.3g} B/element |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def _git_commit():
    try:
        result = subprocess.run(
            ["git", "-C", str(_ROOT), "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu: {_cpu_model()}, {torch.get_num_threads()} threads"


def report(rows, device):
    """The JSON document of one run: rows plus what produced them."""
    diffusers_version = None
    if diffusers_available():
        import diffusers

        diffusers_version = diffusers.__version__
    return {
        "benchmark": "posterior",
        "device": _device_name(device),
        "torch": torch.__version__,
        "diffusers": diffusers_version,
        "vae_ext": vae_ext.__version__,
        "backend": vae_ext.build_info()["backend"],
        "commit": _git_commit(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "step": "posterior = cls(moments); z = posterior.sample(); kl = posterior.kl(); backward of (z, kl)",
        "saved_bytes": "distinct storages packed by saved_tensors_hooks; per latent element beyond the moments",
        "results": rows,
    }


def _shape(text):
    shape = tuple(int(n) for n in text.lower().split("x"))
    if len(shape) != 4:
        raise argparse.ArgumentTypeError(f"a latent shape is BxCxHxW, got {text!r}")
    return shape


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vae_ext bench posterior", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=sorted(DTYPES))
    parser.add_argument("--shape", nargs="+", type=_shape, default=list(SD_SHAPES), help="latents BxCxHxW")
    parser.add_argument("--layout", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--json", type=Path, help="write the rows and the run's context here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    rows = run_posterior_bench(
        args.device, args.repeats, dtypes=[DTYPES[d] for d in args.dtype], layouts=args.layout, shapes=args.shape
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report(rows, args.device), indent=1) + "\n")
    print(format_markdown(rows) if args.markdown else json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
