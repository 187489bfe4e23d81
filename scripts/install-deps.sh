#!/usr/bin/env bash
# Installs the Debian 12 packages tollgate needs to build, test and run, if
# any are missing. Safe to run again; needs root (or sudo) only when
# something is missing. Runs without a terminal (CI).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libboost1.81-dev nlohmann-json3-dev libyaml-cpp-dev prometheus-cpp-dev
  libssl-dev libhiredis-dev catch2
  curl ca-certificates
)
if [[ "${TOLLGATE_DEPS:-}" == *test* ]]; then
  # Servers and tools the test suite starts itself; Chromium for the
  # status-page test (driven by playwright-core from npm, see tests/browser).
  # That test needs Node.js 20 or later, which Debian 12 does not package
  # (its nodejs is 18): without it the test is skipped, so no nodejs is
  # installed here. A Node.js 20 without npm (run.mjs runs `npm ci`) gets
  # Debian's npm.
  packages+=(redis-server chromium)
  if command -v node >/dev/null && ! command -v npm >/dev/null; then
    packages+=(npm)
  fi
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
