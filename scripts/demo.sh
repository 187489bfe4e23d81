#!/usr/bin/env bash
# Installs what is missing, builds tollgate (Release) and starts it on
# :8080 in front of the small demo backend on 127.0.0.1:9000, with the
# default configuration (conf/tollgate.yaml). Ctrl-C stops both.
#
#   curl -i localhost:8080/          a proxied response, with X-RateLimit-* headers
#   curl localhost:9090/metrics      Prometheus metrics
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target tollgate tollgate-demo-backend

# The backend says "listening on" once bound; if it cannot bind (port 9000
# taken), stop here rather than put tollgate in front of whatever holds it.
backend_log=$(mktemp)
build/release/tollgate-demo-backend --listen 127.0.0.1:9000 2>"$backend_log" &
backend=$!
trap 'kill $backend 2>/dev/null || true; rm -f "$backend_log"' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$backend_log" && break
  if ! kill -0 "$backend" 2>/dev/null; then
    cat "$backend_log" >&2
    echo "demo: the demo backend could not start on 127.0.0.1:9000 (is the port taken?)" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q "listening on" "$backend_log" || { echo "demo: the demo backend did not start within 10 s" >&2; exit 1; }
cat "$backend_log" >&2

echo
# The addresses conf/tollgate.yaml sets, unless the environment moves them.
proxy_at=${TOLLGATE_LISTEN:-localhost:8080}
admin_at=${TOLLGATE_ADMIN_LISTEN:-localhost:9090}
echo "tollgate is starting on http://$proxy_at in front of the demo backend."
echo "Try:  curl -i http://$proxy_at/      and      curl http://$admin_at/metrics"
echo
# In the background, so that a TERM or INT to this script (Ctrl-C, a
# supervisor, timeout) stops both processes, not only the script.
build/release/tollgate --config conf/tollgate.yaml &
tollgate=$!
trap 'kill $tollgate $backend 2>/dev/null || true; rm -f "$backend_log"' EXIT
trap 'exit 130' INT TERM
wait $tollgate
