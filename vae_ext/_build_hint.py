"""What the warning says when the compiled kernels (vae_ext._C) are missing or do not load."""

from __future__ import annotations

import glob
import importlib.machinery
import os

_BUILD = (
    "To build them: install torch first, then from the source tree run "
    "`pip install --no-build-isolation .` with a C++ compiler present and VAE_EXT_NO_EXT unset "
    "(README.md, 'Build'); `python -m vae_ext info` shows what was built."
)


def compiled_module_files() -> list[str]:
    """The vae_ext._C files next to this package (any Python version's suffix)."""
    here = os.path.dirname(os.path.abspath(__file__))
    suffixes = importlib.machinery.EXTENSION_SUFFIXES + [".so", ".pyd"]
    return sorted({path for suffix in suffixes for path in glob.glob(os.path.join(here, "_C*" + suffix))})


def missing_kernels_message(import_error: BaseException | None) -> str:
    """Not built (no _C file: a pure-Python install) or built but not loadable (another torch)."""
    files = compiled_module_files()
    if not files:
        return (
            "vae_ext: the compiled kernels were not built (this is a pure-Python install), so every op "
            "runs on the pure-PyTorch fallback: the same results, slower. " + _BUILD
        )
    return (
        f"vae_ext: the compiled kernels {os.path.basename(files[0])} failed to load ({import_error}), so every "
        "op runs on the pure-PyTorch fallback: the same results, slower. They must be built against the "
        "torch in use; rebuild them. " + _BUILD
    )
