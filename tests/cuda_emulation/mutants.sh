#!/usr/bin/env bash
# Shows that the emulation catches the bugs it is meant to catch: each mutant is
# csrc/cuda/kernels_cuda.cuh with one deliberate bug (a sed expression), built and run in a
# copy of the tree; the run must fail. Not part of CI (several minutes a mutant on 2 cores).
#
#   tests/cuda_emulation/mutants.sh [NAME...]     default: every mutant
#
# Prints one line per mutant, "caught" or "MISSED", and exits 1 if any was missed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="${MUTANTS_DIR:-${TMPDIR:-/tmp}/vae_ext_mutants}"

# name | builds to run | sed expression on kernels_cuda.cuh
mutants=(
  "no-sync-before-warp-sums|tsan|/__syncthreads();  \/\/ the previous tile/d"
  "no-sync-after-warp-sums|asan tsan|/if (threadIdx.x % kWarp == 0) warp_sums\[warp\] = v;/{n;/__syncthreads();/d}"
  "shuffle-width-always-32|asan|s/const int width = team < kWarp ? team : kWarp;/const int width = kWarp;/"
  "shuffle-mask-misses-lane-31|asan|s/__shfl_xor_sync(0xffffffffu, v, offset)/__shfl_xor_sync(0x7fffffffu, v, offset)/"
  "one-group-past-the-row|asan|s/return (cols - origin + G - 1) \/ G;/return (cols - origin + G) \/ G;/"
  "philox-block-in-32-bits|asan|s/(static_cast<uint64_t>(first) >> 2) + q/(static_cast<uint32_t>(first) >> 2) + q/"
  "last-partial-dropped|asan|s/for (int s = 1; s < splits; ++s)/for (int s = 1; s < splits - 1; ++s)/"
  "split-groups-overlap|asan|s/const int64_t group_stride = static_cast<int64_t>(t.team) \* t.splits;/const int64_t group_stride = static_cast<int64_t>(t.team);/"
)

selected=("$@")
missed=0
for entry in "${mutants[@]}"; do
  IFS='|' read -r name builds expression <<<"$entry"
  if ((${#selected[@]})) && [[ ! " ${selected[*]} " == *" $name "* ]]; then continue; fi
  rm -rf "$work/src"
  mkdir -p "$work/src"
  # Times kept, so the build directory's other objects stay up to date; the header touched,
  # so everything that includes it is rebuilt from this mutant.
  cp -rp "$root/csrc" "$root/tests" "$root/.ci" "$work/src/"
  header="$work/src/csrc/cuda/kernels_cuda.cuh"
  sed -i "$expression" "$header"
  touch "$header"
  if cmp -s "$header" "$root/csrc/cuda/kernels_cuda.cuh"; then
    echo "mutant $name: the expression changed nothing (update it)"
    missed=1
    continue
  fi
  log="$work/$name.log"
  if SANITIZERS="$builds" EMULATION_ARGS="--quick" \
    bash "$work/src/.ci/cuda_emulation.sh" "$work/build" >"$log" 2>&1; then
    echo "mutant $name: MISSED (log: $log)"
    missed=1
  else
    reason="$(grep -m1 -E "^FAIL|ERROR|WARNING: ThreadSanitizer|AddressSanitizer|runtime error" "$log")"
    echo "mutant $name: caught by $builds: ${reason:0:150}"
  fi
done
exit $missed
