#!/usr/bin/env bash
# Quality gates: ruff lint + format check on the Python, clang-format check on csrc/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pip install -q ruff==0.17.6 clang-format==23.1.5
ruff check .
ruff format --check .
find csrc tests/cuda_emulation \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) -print0 |
  xargs -0 clang-format --dry-run --Werror
echo "quality gates passed"
