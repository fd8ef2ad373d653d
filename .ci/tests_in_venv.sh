#!/usr/bin/env bash
# Runs the pytest suite against the vae_ext installed in another venv (by default the torch 2.11
# venv of .ci/cuda_build_check.sh, whose CUDA build runs on the CPU here), from outside the
# source tree so that the installed package is the one tested. Where that venv has no vae_ext
# (no nvcc: the build check skipped), builds the CPU kernels into it first.
#
#   VAE_EXT_CUDA_VENV=DIR .ci/tests_in_venv.sh [PYTEST_ARGS...]
#
# Environment: VAE_EXT_CUDA_VENV (required), VAE_EXT_CUDA_TORCH (default 2.11.0, used only
# when the venv must be made here), MAX_JOBS.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VAE_EXT_CUDA_VENV:?set VAE_EXT_CUDA_VENV to the venv to test in}"
py="$venv/bin/python"
pip=("$py" -m pip --isolated --disable-pip-version-check --quiet)
[[ -x "$py" ]] || python3 -m venv "$venv"
"$py" -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==${VAE_EXT_CUDA_TORCH:-2.11.0}" setuptools wheel ninja numpy

work="$(mktemp -d "${TMPDIR:-/tmp}/vae_ext_venv_tests.XXXXXX")"
trap 'rm -rf "$work"' EXIT
tar -C "$root" --exclude=./build --exclude=./.git --exclude='*.so' --exclude='*.egg-info' -cf - . |
  tar -C "$work" -xf -
if ! (cd /tmp && "$py" -c "import vae_ext._C") 2>/dev/null; then
  echo "no compiled vae_ext in $venv: building the CPU kernels"
  (cd "$work" && VAE_EXT_NO_CUDA=1 "${pip[@]}" install --no-build-isolation --no-deps .)
fi
# The test requirements are the project's [train] and [test] extras (pyproject.toml), by name.
mapfile -t requirements < <("$py" -c "
import tomllib
extras = tomllib.load(open('$work/pyproject.toml', 'rb'))['project']['optional-dependencies']
print('\n'.join(extras['train'] + extras['test']))")
"${pip[@]}" install "${requirements[@]}"
rm -rf "$work/vae_ext"  # the installed package, not the copied sources, is under test
cd "$work"
"$py" -c "import torch, vae_ext; print('torch', torch.__version__, '| vae_ext', vae_ext.build_info())"
"$py" -m pytest -p no:cacheprovider "$@"
