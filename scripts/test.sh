#!/usr/bin/env bash
# Builds tollgate and runs the whole test suite with ctest. Installs missing
# Debian packages first. TOLLGATE_PRESET picks the build: release (default),
# asan (ASan + UBSan) or tsan. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

preset="${TOLLGATE_PRESET:-release}"
TOLLGATE_DEPS=test scripts/install-deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" -j "$(nproc)" "$@"
