"""vae_ext: fused reparameterization and Gaussian KL kernels for autoencoders and VAEs."""

from __future__ import annotations

from importlib import metadata as _metadata

try:  # one version, pyproject.toml's, read from the installed package's metadata
    __version__ = _metadata.version("vae_ext")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from . import _ops, reference  # noqa: F401  (reference: vae_ext.reference, not exported)
from .distributions import DiagonalGaussian, DiagonalGaussianDistribution
from .functional import draw_seed, gaussian_kl, reparameterize, reparameterize_kl
from .losses import ELBOLoss, ELBOParts
from .modules import AE, VAE, AEOutput, GaussianLatent, VAEOutput
from .schedules import ConstantBeta, CyclicalBeta, LinearWarmup


def build_info() -> dict:
    """What this install was built with and which path the functional API takes."""
    import torch

    compiled = _ops._C
    arch_list = compiled.cuda_arch_list if compiled is not None else ""
    return {
        "version": __version__,
        "torch": torch.__version__,
        "cpu_kernels": compiled is not None,
        "cuda_kernels": bool(compiled is not None and compiled.with_cuda),
        "cuda_arch_list": [a for a in arch_list.replace(",", ";").split(";") if a],
        "backend": "fallback" if _ops.ops is _ops.fallback else "compiled",
        "force_fallback": _ops.FORCE_FALLBACK,
    }


__all__ = [
    "AE",
    "VAE",
    "AEOutput",
    "ConstantBeta",
    "CyclicalBeta",
    "DiagonalGaussian",
    "DiagonalGaussianDistribution",
    "ELBOLoss",
    "ELBOParts",
    "GaussianLatent",
    "LinearWarmup",
    "VAEOutput",
    "build_info",
    "draw_seed",
    "gaussian_kl",
    "reparameterize",
    "reparameterize_kl",
]  # vae_ext.reference (the pure-PyTorch ops) stays importable, as an internal module
