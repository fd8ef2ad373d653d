#!/usr/bin/env bash
# The CUDA kernels on the CPU (tests/cuda_emulation/README.md): builds the emulation twice,
# with AddressSanitizer + UndefinedBehaviorSanitizer and with ThreadSanitizer, against the
# torch of the current Python, and runs both: the first on every case, the second on the
# quick set (ThreadSanitizer is slow). Exits non-zero on any failure.
#
#   .ci/cuda_emulation.sh [BUILD_DIR]     default build/cuda-emulation (under the ignored build/)
#
# Environment: PYTHON (default python), CXX (default g++), MAX_JOBS (default: all cores),
# EMULATION_ARGS (extra arguments for every run, e.g. --quick), SANITIZERS (the builds to
# make and run, default "asan tsan").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
build="${1:-build/cuda-emulation}"
python="${PYTHON:-python}"
cxx="${CXX:-g++}"
jobs="${MAX_JOBS:-$(nproc)}"
sanitizers="${SANITIZERS:-asan tsan}"
start=$SECONDS

torch_dir="$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
abi="$("$python" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
mkdir -p "$build"

# One ninja file: the CPU kernels (the reference, built as setup.py builds them) and the
# driver are compiled once; the device code and the emulation runtime once per sanitizer.
common="-std=c++20 -g -fPIC -ffp-contract=off -D_GLIBCXX_USE_CXX11_ABI=$abi \
-isystem $torch_dir/include -isystem $torch_dir/include/torch/csrc/api/include"
cpu_flags="$common -O3 -fno-math-errno -fno-trapping-math -fopenmp"
emu_flags="$common -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror -Wno-unknown-pragmas"
asan="-fsanitize=address,undefined -fno-sanitize-recover=all"
tsan="-fsanitize=thread"
libs="-L$torch_dir/lib -Wl,-rpath,$torch_dir/lib -Wl,--no-as-needed -ltorch_cpu -lc10 \
-Wl,--as-needed -fopenmp -pthread -rdynamic"
src="$root/tests/cuda_emulation"
{
  echo "rule cxx"
  echo "  command = $cxx \$flags -MD -MF \$out.d -c \$in -o \$out"
  echo "  depfile = \$out.d"
  echo "  deps = gcc"
  echo "  description = compile \$out"
  echo "rule link"
  echo "  command = $cxx \$flags -o \$out \$in $libs"
  echo "  description = link \$out"
  echo "build ops.o: cxx $root/csrc/ops.cpp"
  echo "  flags = $cpu_flags"
  echo "build kernels_cpu.o: cxx $root/csrc/cpu/kernels_cpu.cpp"
  echo "  flags = $cpu_flags"
  for name in cases main; do
    echo "build $name.o: cxx $src/$name.cpp"
    echo "  flags = $emu_flags"
  done
  for san in asan tsan; do
    flags="$emu_flags ${!san}"
    objects=""
    for name in cuda_emu emulated_ops plan_tests; do
      echo "build $name.$san.o: cxx $src/$name.cpp"
      echo "  flags = $flags"
      objects+=" $name.$san.o"
    done
    echo "build cuda_emulation_$san: link $objects cases.o main.o ops.o kernels_cpu.o"
    echo "  flags = ${!san}"
  done
} >"$build/build.ninja"

targets=()
for san in $sanitizers; do targets+=("cuda_emulation_$san"); done
ninja -C "$build" -j "$jobs" "${targets[@]}"
echo "cuda emulation build: $((SECONDS - start)) s"

status=0
# shellcheck disable=SC2086  # EMULATION_ARGS is a list of words
run() {
  local name=$1
  shift
  local t0=$SECONDS
  echo "=== $name $*"
  if "$build/$name" "$@" ${EMULATION_ARGS:-}; then
    echo "=== $name passed ($((SECONDS - t0)) s)"
  else
    echo "=== $name FAILED ($((SECONDS - t0)) s)"
    status=1
  fi
}
# The libraries of torch are not instrumented: their allocations are checked (ASan intercepts
# malloc everywhere), their internals are not.
for san in $sanitizers; do
  case "$san" in
    asan)
      ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" run cuda_emulation_asan
      ;;
    tsan) TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" run cuda_emulation_tsan --quick ;;
    *) echo "unknown sanitizer build '$san' (asan, tsan)" && status=1 ;;
  esac
done

echo "cuda emulation: $((SECONDS - start)) s, status $status"
exit $status
