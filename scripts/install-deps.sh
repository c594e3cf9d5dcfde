#!/usr/bin/env bash
# Installs everything runwarden needs to build, run and test, from Debian packages and npm.
# Idempotent: safe to run again. Needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config clang clang-format libclang-rt-14-dev
  libboost1.81-dev libssl-dev openssl nlohmann-json3-dev libyaml-cpp-dev libre2-dev libcli11-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  curl ca-certificates nodejs npm python3 iproute2 iptables
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere than apt on some machines: a working node is enough.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]:-}"
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Test clients for the integration suite (undici, MCP SDK), pinned by package-lock.json.
if [ -f integration/package.json ]; then
  if [ ! -d integration/node_modules ] || [ integration/package-lock.json -nt integration/node_modules ]; then
    echo "install-deps: npm ci (integration/)"
    (cd integration && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
echo "install-deps: ok"
