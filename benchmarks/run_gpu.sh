#!/usr/bin/env bash
# On a CUDA machine: build vae_ext with its CUDA kernels, run the whole test suite, benchmark on
# cuda, and leave everything under $OUT (at most 7 files, so that they all come back).
#
#   OUT=/some/dir benchmarks/run_gpu.sh [build] [test] [bench]     (no stage named = all three)
#
# Every stage builds first (incremental when already built). Environment:
#   OUT                    where results and logs go (default ./gpu-out)
#   PYTHON                 interpreter holding a CUDA torch (default python3)
#   TORCH_CUDA_ARCH_LIST   default: the visible GPU's compute capability, e.g. 9.0
#   BENCH_SIZES            --sizes for the benchmark (default gpu)
#   BENCH_ARGS             extra arguments for python -m vae_ext bench (e.g. "--ops all")
#   PYTEST_ARGS            extra arguments for pytest (e.g. "-x -q")
# Files: env.txt, build.log, pytest.log, bench-cuda.json, bench-cuda.log, bench-cuda.md, bench-cuda.png
# Exit status: 0 when every stage run passed, else 1 (a failing stage does not stop the later ones).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

stage() { echo "=== $* ($(date -u +%H:%M:%S))"; }
fail() { echo "FAILED: $*"; status=1; }

environment() {
  stage environment
  {
    nvidia-smi || true
    nvcc --version || true
    "$PYTHON" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("gpu", props.name, "capability", torch.cuda.get_device_capability(), "sms", props.multi_processor_count,
          "memory_gib", round(props.total_memory / 2**30, 1), "l2_mib", getattr(props, "L2_cache_size", 0) / 2**20)
else:
    print("gpu: none visible to torch")
EOF
  } >"$OUT/env.txt" 2>&1
  tail -n 3 "$OUT/env.txt"
}

build() {
  stage build
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null) ||
      TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX"
    export TORCH_CUDA_ARCH_LIST
  fi
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PYTHON" setup.py build_ext --inplace >>"$OUT/build.log" 2>&1 ||
    { tail -n 40 "$OUT/build.log"; fail "build (see build.log)"; return 1; }
  "$PYTHON" -m vae_ext info | tee -a "$OUT/build.log"
  "$PYTHON" -c "import sys, vae_ext; sys.exit(0 if vae_ext.build_info()['cuda_kernels'] else 1)" ||
    { fail "vae_ext was built without its CUDA kernels"; return 1; }
}

run_tests() {
  stage tests
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
  "$PYTHON" -m pytest -ra -p no:cacheprovider ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/pytest.log" | tail -n 30 ||
    fail "tests (see pytest.log)"
}

run_bench() {
  stage benchmark
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  "$PYTHON" -m vae_ext bench --device cuda --sizes "${BENCH_SIZES:-gpu}" ${BENCH_ARGS:-} \
    --json "$OUT/bench-cuda.json" 2>&1 | tee "$OUT/bench-cuda.log" | grep -v '^\[' ||
    fail "benchmark (see bench-cuda.log)"
  if [ -f "$OUT/bench-cuda.json" ]; then
    "$PYTHON" -m vae_ext bench --table "$OUT/bench-cuda.json" --plot "$OUT/bench-cuda.png" >"$OUT/bench-cuda.md" ||
      fail "markdown table or plot"
  fi
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test bench)
environment
if build; then
  for name in "${stages[@]}"; do
    case "$name" in
      build) ;;
      test) run_tests ;;
      bench) run_bench ;;
      *) fail "unknown stage '$name' (build, test, bench)" ;;
    esac
  done
fi
stage "done, status $status; files in $OUT"
exit $status
