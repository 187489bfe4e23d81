#!/usr/bin/env bash
# Builds tollgate (Release) and runs the whole test suite with ctest.
# Installs missing Debian packages first. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

TOLLGATE_DEPS=test scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release -j "$(nproc)" "$@"
