"""The warning of an install without working compiled kernels says what happened and what to do."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys

import pytest

import vae_ext

PACKAGE = os.path.dirname(os.path.abspath(vae_ext.__file__))


def _import_copy(tmp_path, extra_file=None):
    """Imports a copy of the package without its compiled module (plus ``extra_file``); stderr."""
    target = tmp_path / "vae_ext"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    if extra_file is not None:
        (target / extra_file).write_bytes(b"not a shared library")
    env = {k: v for k, v in os.environ.items() if k != "VAE_EXT_FORCE_FALLBACK"}
    env["PYTHONPATH"] = str(tmp_path)
    # An editable install's import hook would find vae_ext._C in the checkout: leave it out.
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "import vae_ext\n"
        "assert vae_ext.__file__.startswith(sys.argv[1]), vae_ext.__file__\n"
        "print(vae_ext.build_info()['backend'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fallback"
    return result.stderr


def test_pure_python_install_says_the_kernels_were_not_built(tmp_path):
    err = _import_copy(tmp_path)
    assert "the compiled kernels were not built" in err and "pip install --no-build-isolation ." in err
    assert "circular import" not in err and "Failed to initialize NumPy" not in err


def test_a_broken_compiled_module_says_it_failed_to_load(tmp_path):
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if not suffix.endswith(".so"):
        pytest.skip("needs a platform whose extension modules are .so files")
    err = _import_copy(tmp_path, "_C" + suffix)
    assert f"the compiled kernels _C{suffix} failed to load" in err and "rebuild them" in err
