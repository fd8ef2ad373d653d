"""The source archive holds every file a build from it reads: building a wheel from an sdist
that lacked a header failed at once (csrc/ headers and .cu files were left out)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _build_inputs():
    """What setup.py and CMakeLists.txt read: the package, csrc/ and cmake/, and the top files."""
    tops = ["setup.py", "pyproject.toml", "CMakeLists.txt", "LICENSE", "README.md", "MANIFEST.in"]
    trees = [p for d in ("vae_ext", "csrc", "cmake") for p in (ROOT / d).rglob("*") if p.is_file()]
    files = [ROOT / t for t in tops] + trees
    return sorted(
        str(p.relative_to(ROOT)) for p in files if "__pycache__" not in p.parts and p.suffix not in (".so", ".pyc")
    )


@pytest.mark.skipif(not (ROOT / "setup.py").exists() or not (ROOT / "vae_ext").is_dir(), reason="needs the source tree")
def test_sdist_holds_every_build_input(tmp_path):
    # VAE_EXT_NO_EXT: the archive's contents come from MANIFEST.in alone, with no compiler run.
    env = {**os.environ, "VAE_EXT_NO_EXT": "1"}
    command = [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)]
    command += ["sdist", "--dist-dir", str(tmp_path)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = [path for path in _build_inputs() if path not in names]
    assert not missing, missing
    assert not [name for name in names if name.endswith((".so", ".pyc"))]
