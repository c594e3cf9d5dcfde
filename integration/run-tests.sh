#!/usr/bin/env bash
# Runs the end-to-end suite against RUNWARDEN_BIN (ctest's integration_node sets it).
# Fails, never skips, when something it needs is missing.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/undici ] || [ ! -d node_modules/@modelcontextprotocol/sdk ] || [ ! -d node_modules/zod ]; then
  echo "integration: node_modules missing: run scripts/install-deps.sh (npm ci in integration/)" >&2
  exit 1
fi
for tool in node curl openssl; do
  command -v "$tool" >/dev/null || { echo "integration: $tool not found: run scripts/install-deps.sh" >&2; exit 1; }
done
if [ -z "${RUNWARDEN_BIN:-}" ] || [ ! -x "$RUNWARDEN_BIN" ]; then
  echo "integration: RUNWARDEN_BIN must name the runwarden binary (got '${RUNWARDEN_BIN:-}')" >&2
  exit 1
fi
# One file at a time: each starts its own runwarden and upstreams; the machine has 2 cores.
exec node --test --test-concurrency=1 --test-timeout=120000 ./*.test.mjs
