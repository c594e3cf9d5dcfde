#!/usr/bin/env bash
# 10,000 concurrently held requests through the real runwarden: RSS with every hold pending,
# and approve-to-upstream latency. Usage: bench/holds_bench.sh BUILD_DIR [HOLDS] [SAMPLES]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:?usage: holds_bench.sh BUILD_DIR [HOLDS] [SAMPLES]}"
build="$(cd "$build" && pwd)" # absolute: runwarden is started from a temp dir
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export RUNWARDEN_BIN="${build}/app/runwarden"
export NODE_PATH="${here}/../integration/node_modules"
exec timeout 600 node "${here}/holds_bench.mjs" "${2:-10000}" "${3:-1000}"
