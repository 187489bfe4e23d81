#!/usr/bin/env bash
# bench/slowloris.sh: slow and abusive clients against tollgate, measured.
#
# Starts the demo backend and build/release/tollgate (its own config, ports
# SLOW_PORT_BASE..+2 on 127.0.0.1), runs bench/slowloris (built here from
# bench/slowloris.cpp) with the arguments given, prints its report, and
# stops everything it started. Not part of ctest.
#
#   bench/slowloris.sh                         # 10,000 slow-header clients
#   bench/slowloris.sh --mode idle             # connect, send nothing
#   bench/slowloris.sh --mode chunk-ext --connections 50 --trickle-ms 100 \
#       --trickle-bytes 65536                  # endless chunk extension
#   SLOW_WAVES=2 bench/slowloris.sh            # two waves, one tollgate: is
#                                              # memory reused or leaked?
#
# Environment: BUILD_DIR (build/release), SLOW_WORK_DIR (build/slowloris:
# config, logs, the client binary), SLOW_WAVES (1), SLOW_PORT_BASE (18480),
# SLOW_HEADER_TIMEOUT (10s), SLOW_THREADS (2), SLOW_MAX_CONNECTIONS (20000),
# SLOW_TOLLGATE_ENV (extra environment for tollgate, e.g.
# "GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072").
# Raises `ulimit -n` to 65536 or the hard limit, whichever is lower.
set -Eeuo pipefail
trap 'echo "bench/slowloris.sh: failed (status $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build/release}
work=${SLOW_WORK_DIR:-$root/build/slowloris}
waves=${SLOW_WAVES:-1}
base=${SLOW_PORT_BASE:-18480}
header_timeout=${SLOW_HEADER_TIMEOUT:-10s}
mkdir -p "$work"

for bin in tollgate tollgate-demo-backend; do
  [ -x "$build/$bin" ] || { echo "missing $build/$bin: build the release preset first" >&2; exit 1; }
done
if [ ! -x "$work/slowloris" ] || [ "$root/bench/slowloris.cpp" -nt "$work/slowloris" ]; then
  echo "building $work/slowloris" >&2
  g++ -std=c++20 -O2 -Wall -Wextra -o "$work/slowloris" "$root/bench/slowloris.cpp" -pthread
fi

# As many descriptors as allowed (root without CAP_SYS_RESOURCE, e.g. in a
# container, cannot pass the hard limit): the client and tollgate are
# separate processes, each needs a bit more than --connections.
want=65536
hard=$(ulimit -Hn)
[ "$hard" != unlimited ] && [ "$hard" -lt "$want" ] && want=$hard
ulimit -n "$want"

cat > "$work/tollgate.yaml" <<EOF
listen: 127.0.0.1:$base
admin: {listen: 127.0.0.1:$((base + 1))}
threads: ${SLOW_THREADS:-2}
upstream: {servers: ["http://127.0.0.1:$((base + 2))"]}
client: {header_timeout: $header_timeout, max_connections: ${SLOW_MAX_CONNECTIONS:-20000}}
# Probes must never meet the rate limit: this measures connection handling.
rate_limit: {limit: 100000000, window: 1s}
log: {level: warn, access_log: false}
EOF

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$build/tollgate-demo-backend" --listen "127.0.0.1:$((base + 2))" >"$work/backend.log" 2>&1 &
pids+=($!)
# SLOW_TOLLGATE_ENV: extra environment for tollgate, e.g. malloc tunables.
# shellcheck disable=SC2086
env ${SLOW_TOLLGATE_ENV:-} "$build/tollgate" --config "$work/tollgate.yaml" >"$work/tollgate.log" 2>&1 &
tollgate_pid=$!
pids+=("$tollgate_pid")

# Ready when /readyz answers (no sleep loop on a guess: a bounded poll).
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$((base + 1))/readyz" 2>/dev/null; then break; fi
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$base/" || { echo "tollgate is not serving" >&2; exit 1; }

ms=$(( ${header_timeout%s} * 1000 ))
for wave in $(seq 1 "$waves"); do
  if [ "$waves" -gt 1 ]; then echo "== wave $wave of $waves"; fi
  "$work/slowloris" --target "127.0.0.1:$base" --pid "$tollgate_pid" --header-timeout-ms "$ms" "$@"
done
echo "tollgate open descriptors after the run: $(ls /proc/"$tollgate_pid"/fd 2>/dev/null | wc -l)"
