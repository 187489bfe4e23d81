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
  packages+=(redis-server chromium)
  command -v node >/dev/null || packages+=(nodejs)
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
