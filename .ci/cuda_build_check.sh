#!/usr/bin/env bash
# CUDA build gate for a machine without a GPU: builds vae_ext with its CUDA kernels against a
# CUDA build of torch in a venv of its own (torch 2.11, what the GPU machines run), fails on any
# compile error or register spill (ptxas), then imports the result and checks that the CUDA
# kernels are registered. The build stays installed in the venv: .ci/tests_in_venv.sh runs the
# test suite on it.
#
#   .ci/cuda_build_check.sh
#
# Environment:
#   VAE_EXT_CUDA_VENV    venv to create or reuse (cache); default: a temporary one
#   VAE_EXT_CUDA_TORCH   torch version to install (default 2.11.0)
#   TORCH_CUDA_ARCH_LIST GPU architectures (default: setup.py's DEFAULT_CUDA_ARCH_LIST)
#   MAX_JOBS             parallel compile jobs (default 2)
#   PYTHON               interpreter for the venv (default python3)
# Prints "SKIP: nvcc not found" and exits 0 where there is no nvcc; else a PASS or FAIL line.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_version="${VAE_EXT_CUDA_TORCH:-2.11.0}"
start=$SECONDS

fail() {
  echo "FAIL: cuda build check: $*"
  exit 1
}

if ! command -v nvcc >/dev/null 2>&1; then
  echo "SKIP: nvcc not found"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/vae_ext_cuda_check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log="$work/build.log"

# nvcc on PATH may be a wrapper: the toolkit is the TOP its driver reports.
: >"$work/probe.cu"
top="$(cd "$work" && nvcc --dryrun -c probe.cu -o probe.o 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)"
[[ -n "$top" && -x "$top/bin/nvcc" ]] || fail "cannot locate the CUDA toolkit from 'nvcc --dryrun'"
export CUDA_HOME
CUDA_HOME="$(cd "$top" && pwd -P)"
echo "CUDA toolkit: $CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version | tail -n 1))"

venv="${VAE_EXT_CUDA_VENV:-$work/venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  "${PYTHON:-python3}" -m venv "$venv" || fail "cannot create the venv $venv"
fi
py="$venv/bin/python"
have_torch() {
  "$py" -c "import sys, torch; sys.exit(not (torch.__version__.split('+')[0] == '$torch_version' and torch.version.cuda))" \
    >/dev/null 2>&1
}
pip=("$py" -m pip --isolated --disable-pip-version-check)
if ! have_torch || ! "$py" -c "import setuptools, wheel, ninja, numpy" >/dev/null 2>&1; then
  # --isolated: no pip configuration, so a local CPU-only wheel mirror is not used.
  "${pip[@]}" install --quiet "torch==$torch_version" setuptools wheel ninja numpy ||
    fail "cannot install torch==$torch_version with CUDA into $venv"
fi
have_torch || fail "the torch in $venv is not a CUDA build of $torch_version"
echo "torch: $("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"

# The toolkit may lack the math library headers torch includes; the CUDA wheels ship them.
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for include in "$site"/nvidia/*/include; do
  [[ -d "$include" ]] && CPATH="$include${CPATH:+:$CPATH}"
done
export CPATH="${CPATH:-}"

# Build a copy of the tree (never the checkout's own build outputs), non-editable.
mkdir -p "$work/src"
tar -C "$root" --exclude=./build --exclude=./.git --exclude='*.so' --exclude='*.egg-info' \
  -cf - . | tar -C "$work/src" -xf -
echo "building vae_ext with CUDA for ${TORCH_CUDA_ARCH_LIST:-the default architectures of setup.py} ..."
build_start=$SECONDS
(
  cd "$work/src" &&
    FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-2}" \
      NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:+$NVCC_APPEND_FLAGS }-Xptxas=-v" \
      "${pip[@]}" install --no-build-isolation --no-deps --force-reinstall -v .
) >"$log" 2>&1
status=$?
echo "build: $((SECONDS - build_start)) s"
if ((status != 0)); then
  grep -E "error|FAILED" "$log" | head -n 40
  tail -n 40 "$log"
  fail "the build failed (exit $status)"
fi

# ptxas -v: one "Used N registers" per kernel and architecture; any spill fails the gate.
kernels="$(grep -c "Used [0-9]* registers" "$log")"
max_regs="$(grep -o "Used [0-9]* registers" "$log" | awk '{print $2}' | sort -n | tail -n 1)"
echo "ptxas: $kernels kernel builds, at most ${max_regs:-?} registers"
spills="$(grep -E "\b[1-9][0-9]* bytes spill (stores|loads)" "$log")"
if [[ -n "$spills" ]]; then
  echo "$spills"
  fail "ptxas reports register spills"
fi
((kernels > 0)) || fail "no ptxas output in the build log: were the CUDA kernels compiled?"

# Import from outside the source tree so the installed package is the one checked.
check_import='
import torch, vae_ext
info = vae_ext.build_info()
assert info["cuda_kernels"] is True, info
from vae_ext._ops import OP_NAMES
for name in OP_NAMES:
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"vae_ext::{name}", "CUDA"), name
    assert "kernels_cuda.cu" in torch._C._dispatch_dump(f"vae_ext::{name}"), name
print("import:", info)
'
(cd "$work" && "$py" -c "$check_import") || fail "the installed vae_ext has no CUDA kernels"

echo "PASS: cuda build check ($((SECONDS - start)) s)"
