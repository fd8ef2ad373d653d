#!/usr/bin/env bash
# Native quality gate: configures the CMake build (CMakeLists.txt) against the torch of the
# current Python in a fresh build directory, builds the library and its tests with warnings as
# errors, and runs ctest. Exits non-zero when any step fails.
#
#   .ci/native_tests.sh [BUILD_DIR]      default build/cmake-ci (under the ignored build/)
#
# Environment: PYTHON (default python), CMAKE_BUILD_PARALLEL_LEVEL (default: all cores).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build_dir="${1:-build/cmake-ci}"
python="${PYTHON:-python}"
jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

torch_prefix="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
generator=()
if command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi

start=$SECONDS
rm -rf "$build_dir"
cmake -S . -B "$build_dir" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DPython_EXECUTABLE="$(command -v "$python")" \
  -DVAE_EXT_BUILD_TESTS=ON \
  -DVAE_EXT_WERROR=ON
cmake --build "$build_dir" --parallel "$jobs"
echo "native build: $((SECONDS - start)) s"
ctest --test-dir "$build_dir" --output-on-failure --parallel "$jobs"
echo "native build and tests: $((SECONDS - start)) s"
