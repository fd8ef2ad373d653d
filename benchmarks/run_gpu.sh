#!/usr/bin/env bash
# One GPU lease in one call: every stage in order, each cut by its own time budget (timeout)
# so that a slow stage costs only itself; results and logs go to $OUT, 8 files at most.
#
#   OUT=/some/dir benchmarks/run_gpu.sh            on a CUDA machine
#   OUT=/some/dir benchmarks/run_gpu.sh --dry-run  no GPU: every stage that can run on the CPU
#
# Stages (budget in seconds, BUDGET_<STAGE> overrides; the defaults add up to 550):
#   env        30   nvidia-smi, nvcc, torch, the GPU                              -> summary.txt
#   build      140  setup.py build_ext --inplace for the visible GPU's arch only  -> build.log
#   tests      90   pytest -k cuda (every CUDA test)                              -> tests.log
#   compare    45   benchmarks/sanitizer_cases.py --compare: every launch plan against the
#                   CPU kernels (z and gradients bit for bit)                      -> tests.log
#   memcheck   45   compute-sanitizer --tool memcheck  on sanitizer_cases.py       -> tests.log
#   racecheck  40   compute-sanitizer --tool racecheck on sanitizer_cases.py       -> tests.log
#   synccheck  30   compute-sanitizer --tool synccheck on sanitizer_cases.py       -> tests.log
#   bench      70   python -m vae_ext bench --device cuda --sizes gpu --no-compile --min-time 0.1
#                   -> bench-cuda.json, bench-cuda.log, bench-cuda.md, bench-cuda.png
#   step       60   python -m vae_ext bench step --device cuda --sizes full --no-compile: training steps
#                   with peak memory -> step-cuda.json, its table appended to bench-cuda.md, bench-cuda.log
# summary.txt gets the environment and one line per stage: PASS, FAIL, TIMEOUT (cut at its
# budget) or SKIP, with its seconds.
#
# --dry-run (no GPU needed): env; build as configured (with a CUDA torch and nvcc it compiles
# the CUDA kernels for TORCH_CUDA_ARCH_LIST, default setup.py's, and checks they registered; with a
# CPU torch it builds the CPU kernels); tests on the CPU (the CUDA tests skip); compare with
# sanitizer_cases.py --device cpu; the sanitizer stages run compute-sanitizer on
# `sanitizer_cases.py --list` when it is installed (else SKIP); bench --device cpu on the
# quick sizes; step --device cpu on the quick sizes. It proves the commands and the files, not the
# GPU results or timings.
#
# Environment: OUT (default ./gpu-out), PYTHON (default python3), MAX_JOBS (default nproc),
# TORCH_CUDA_ARCH_LIST (default: the visible GPU's, else setup.py's), PYTEST_ARGS (default "-k cuda"),
# BENCH_SIZES (default gpu), BENCH_ARGS (default "--no-compile --min-time 0.1"; "" adds
# torch.compile, which may not fit the budget), STEP_ARGS (default "--no-compile"; "" adds
# torch.compile: 12 compiled steps, raise BUDGET_STEP), COMPUTE_SANITIZER (path; default: found
# on PATH or in the toolkit).
# Exit status: 0 when every stage passed or was skipped, else 1.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
OUT=${OUT:-$PWD/gpu-out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
summary="$OUT/summary.txt"
: >"$summary"
status=0
device=cuda
((dry_run)) && device=cpu

# stage NAME BUDGET LOG COMMAND...: runs COMMAND (a function) under its budget, appending its
# output to LOG, and records the outcome in summary.txt.
stage() {
  local name=$1 budget=$2 log=$3
  shift 3
  local var="BUDGET_${name^^}"
  budget=${!var:-$budget}
  local t0=$SECONDS rc
  echo "=== $name (budget ${budget}s, $(date -u +%H:%M:%S))" | tee -a "$log"
  timeout --kill-after=10 "$budget" "$@" >>"$log" 2>&1
  rc=$?
  local outcome=PASS
  if ((rc == 124 || rc == 137)); then
    outcome=TIMEOUT
  elif ((rc == 77)); then
    outcome=SKIP
  elif ((rc != 0)); then
    outcome=FAIL
  fi
  [ "$outcome" = PASS ] || [ "$outcome" = SKIP ] || status=1
  printf '%-10s %-7s %4ds of %4ds  (%s)\n' "$name" "$outcome" $((SECONDS - t0)) "$budget" \
    "$(basename "$log")" | tee -a "$summary"
  tail -n 3 "$log"
}

# Everything below runs under `timeout` as its own process: `bash -c` with this file's
# functions exported.
environment() {
  nvidia-smi || echo "nvidia-smi: not available"
  nvcc --version | tail -n 2 || echo "nvcc: not available"
  "$PYTHON" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, "capability", torch.cuda.get_device_capability(), "sms", p.multi_processor_count,
          "memory_gib", round(p.total_memory / 2**30, 1))
else:
    print("gpu: none visible to torch")
EOF
}

build() {
  # Only the visible GPU's architecture (a shorter build); without one, setup.py's default.
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    if arch=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null); then
      export TORCH_CUDA_ARCH_LIST=$arch
    fi
  fi
  echo "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-(the default of setup.py)}"
  FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PYTHON" setup.py build_ext --inplace || return 1
  "$PYTHON" -m vae_ext info
  if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
    "$PYTHON" -c "import sys, vae_ext; sys.exit(0 if vae_ext.build_info()['cuda_kernels'] else 1)" ||
      { echo "vae_ext was built without its CUDA kernels"; return 1; }
  else
    ((dry_run)) || { echo "the torch of $PYTHON has no CUDA"; return 1; }
    echo "dry run: a CPU torch, the CPU kernels were built"
  fi
}

run_tests() {
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
  "$PYTHON" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:--k cuda}
}

compare_plans() {
  "$PYTHON" benchmarks/sanitizer_cases.py --device "$device" --compare
}

find_sanitizer() {
  local candidate
  for candidate in "${COMPUTE_SANITIZER:-}" "$(command -v compute-sanitizer)" \
    "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && echo "$candidate" && return 0
  done
  return 1
}

sanitize() {
  local tool=$1 sanitizer
  sanitizer=$(find_sanitizer) || { echo "SKIP: compute-sanitizer not found"; return 77; }
  local cases=(benchmarks/sanitizer_cases.py --device "$device")
  ((dry_run)) && cases=(benchmarks/sanitizer_cases.py --list)
  # No caching allocator: each tensor is its own allocation, so memcheck sees its end.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool "$tool" --error-exitcode 1 \
    "$PYTHON" "${cases[@]}"
}

run_bench() {
  local sizes=${BENCH_SIZES:-gpu}
  ((dry_run)) && sizes=quick
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  "$PYTHON" -m vae_ext bench --device "$device" --sizes "$sizes" ${BENCH_ARGS---no-compile --min-time 0.1} \
    --quiet --json "$OUT/bench-cuda.json" || return 1
  "$PYTHON" -m vae_ext bench --table "$OUT/bench-cuda.json" >"$OUT/bench-cuda.md" || return 1
  "$PYTHON" -m vae_ext bench --table "$OUT/bench-cuda.json" --plot "$OUT/bench-cuda.png" >/dev/null ||
    echo "no plot (bench --plot needs matplotlib)"
}

run_step() {
  local sizes=full table
  ((dry_run)) && sizes=quick
  table=$(mktemp) || return 1
  # shellcheck disable=SC2086  # STEP_ARGS is a list of words
  "$PYTHON" -m vae_ext bench step --device "$device" --sizes "$sizes" ${STEP_ARGS---no-compile} --quiet \
    --json "$OUT/step-cuda.json" >"$table" || { rm -f "$table"; return 1; }
  { echo; cat "$table"; } >>"$OUT/bench-cuda.md"
  rm -f "$table"
}

export PYTHON OUT device dry_run
export -f environment build run_tests compare_plans find_sanitizer sanitize run_bench run_step

stage env 30 "$summary" bash -c environment
stage build 140 "$OUT/build.log" bash -c build
stage tests 90 "$OUT/tests.log" bash -c run_tests
stage compare 45 "$OUT/tests.log" bash -c compare_plans
# The sanitizers log into tests.log: $OUT comes back with 8 files at most.
stage memcheck 45 "$OUT/tests.log" bash -c "sanitize memcheck"
stage racecheck 40 "$OUT/tests.log" bash -c "sanitize racecheck"
stage synccheck 30 "$OUT/tests.log" bash -c "sanitize synccheck"
stage bench 70 "$OUT/bench-cuda.log" bash -c run_bench
stage step 60 "$OUT/bench-cuda.log" bash -c run_step
echo "=== done, status $status; $(find "$OUT" -maxdepth 1 -type f | wc -l) files in $OUT" | tee -a "$summary"
exit $status
