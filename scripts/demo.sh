#!/usr/bin/env bash
# Installs, builds and runs runwarden on the bundled example: a dev CA, the example
# catalogue and runbooks (examples/), and a demo upstream on 127.0.0.1:18080.
# Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh
export CCACHE_DIR=${CCACHE_DIR:-$root/build/.ccache}
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNWARDEN_BUILD_TESTS=OFF \
  -DRUNWARDEN_BUILD_BENCH=OFF >/dev/null
ninja -C build/release runwarden
bin=build/release/app/runwarden

[ -f examples/certs/ca.pem ] || "$bin" ca init examples/certs
"$bin" check -c examples/runwarden.yaml

node examples/demo/upstream.mjs &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT

cat <<'MSG'

runwarden is starting on the bundled example (active runbook: demo).
Try, from another terminal in the repository root (the agent's side):
  export http_proxy=http://127.0.0.1:15001
  curl -s http://127.0.0.1:18080/status                                        # read_only: forwarded
  curl -s -X POST http://127.0.0.1:18080/refunds -d '{"amount":1200}' \
       -H 'content-type: application/json'                                     # allowed: forwarded
  curl -s -X POST http://127.0.0.1:18080/refunds -d '{"amount":90000}' \
       -H 'content-type: application/json' &                                   # held: waits for a human
  curl -s -X DELETE http://127.0.0.1:18080/customers/42                        # denied: 403, never arrives
The operator's side. The admin API (127.0.0.1:15000) is never reached through the proxy
(runwarden answers a request addressed to itself 403 loop_refused), hence --noproxy:
  export RUNWARDEN_TOKEN=demo-operator-token                                   # operator alice (examples/operators.txt)
  build/release/app/runwarden approvals list                                   # the held refund: apr_...
  build/release/app/runwarden approvals approve APR_ID -r checked              # the held curl gets its answer
  curl -s --noproxy '*' http://127.0.0.1:15000/v1/status                       # admin: mode and runbook
  curl -s --noproxy '*' http://127.0.0.1:15000/metrics                         # Prometheus metrics
  build/release/app/runwarden audit verify examples/audit                      # the hash chain holds
  build/release/app/runwarden audit query examples/audit                       # one line per request
  build/release/app/runwarden audit blast-radius --run RUN_ID examples/audit   # RUN_ID: from the query
The log is examples/audit/: audit.path in examples/runwarden.yaml, relative to that file.
MSG
"$bin" serve -c examples/runwarden.yaml
