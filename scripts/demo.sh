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

build/release/tollgate-demo-backend --listen 127.0.0.1:9000 &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT

echo
echo "tollgate is starting on http://localhost:8080 in front of the demo backend."
echo "Try:  curl -i http://localhost:8080/      and      curl http://localhost:9090/metrics"
echo
build/release/tollgate --config conf/tollgate.yaml
