# Helpers shared by bench/compare and bench/slots. Sourced, not executed.
# shellcheck shell=bash

# ensure_packages PKG...: installs the Debian packages that are missing
# (apt-get; root or sudo). An argument "a|b" means: a if it has an install
# candidate, else b.
ensure_packages() {
  local want=() p alt
  for p in "$@"; do
    if [[ "$p" == *"|"* ]]; then
      # Any alternative already installed satisfies the pair.
      local found=""
      for alt in ${p//|/ }; do
        if pkg_installed "$alt"; then found=$alt; break; fi
      done
      [ -n "$found" ] && continue
      for alt in ${p//|/ }; do
        if apt-cache policy "$alt" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
          want+=("$alt"); found=$alt; break
        fi
      done
      [ -n "$found" ] || want+=("${p%%|*}")
    elif ! pkg_installed "$p"; then
      want+=("$p")
    fi
  done
  [ ${#want[@]} -eq 0 ] && return 0
  echo "installing: ${want[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >&2
  $sudo apt-get install -y -q --no-install-recommends "${want[@]}" >&2
}

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# machine_info: one Markdown bullet list describing the host.
machine_info() {
  local model
  model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  echo "- CPU: ${model:-unknown}, $(nproc) cores online ($(grep -c ^processor /proc/cpuinfo) in /proc/cpuinfo)"
  echo "- Memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "- Kernel: $(uname -srm)"
  if [ -r /etc/os-release ]; then
    echo "- OS: $(. /etc/os-release && echo "$PRETTY_NAME")"
  fi
}

# tollgate_version BIN: version line plus the git commit of the work tree.
tollgate_version() {
  local v commit dirty=""
  v=$("$1" --version 2>/dev/null | head -1 || true)
  commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$REPO" status --porcelain -- src include CMakeLists.txt 2>/dev/null)" ]; then
    dirty=" + uncommitted changes in src/include"
  fi
  echo "${v:-tollgate} (commit $commit$dirty)"
}

# find_tollgate: sets TOLLGATE_BIN, building it (release preset) only when
# it does not exist; warns when sources are newer than the binary.
find_tollgate() {
  TOLLGATE_BIN=${TOLLGATE_BIN:-$REPO/build/release/tollgate}
  if [ ! -x "$TOLLGATE_BIN" ]; then
    echo "tollgate binary $TOLLGATE_BIN missing: building it (release preset)" >&2
    (cd "$REPO" && cmake --preset release >&2 && cmake --build --preset release --target tollgate >&2)
  fi
  if [ -n "$(find "$REPO/src" "$REPO/include" -newer "$TOLLGATE_BIN" -type f 2>/dev/null | head -1 || true)" ]; then
    echo "warning: sources are newer than $TOLLGATE_BIN; rebuild it to measure the current code" >&2
  fi
}

# port_in_use PORT: true when something accepts on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_port PORT SECONDS: waits until 127.0.0.1:PORT accepts.
wait_port() {
  local deadline=$((SECONDS + $2))
  until port_in_use "$1"; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.05
  done
}

# busy_pct SECONDS: how much of the machine's CPU time (all cores, percent)
# was not idle during the next SECONDS: other work skews a benchmark.
busy_pct() {
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  sleep "$1"
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    split(a, x, " "); split(b, y, " ");
    busy = y[1] - x[1]; idle = y[2] - x[2];
    total = busy + idle
    printf "%.0f\n", (total > 0) ? 100 * busy / total : 0 }'
}

# snapshot_tollgate DIR: copies TOLLGATE_BIN into DIR and points TOLLGATE_BIN
# at the copy, so a rebuild during the run neither breaks it nor mixes two
# builds in one report. Waits up to a minute for a binary being linked.
snapshot_tollgate() {
  local deadline=$((SECONDS + 60))
  mkdir -p "$1/bin"
  while :; do
    if cp "$TOLLGATE_BIN" "$1/bin/tollgate" 2>/dev/null && "$1/bin/tollgate" --version >/dev/null 2>&1; then
      break
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "cannot run $TOLLGATE_BIN (being rebuilt?)" >&2
      return 1
    fi
    sleep 2
  done
  TOLLGATE_BIN="$1/bin/tollgate"
}
