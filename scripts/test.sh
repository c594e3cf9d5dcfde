#!/usr/bin/env bash
# The one test command (README, CI): installs dependencies, then
#  1. builds everything with warnings as errors and runs every test (unit + integration),
#  2. builds again under AddressSanitizer + UndefinedBehaviorSanitizer and runs every test
#     but the root-only netns one (unit, C++ integration, the Node suite on that binary),
#  3. builds the libFuzzer targets with clang and runs each for a bounded time,
#  4. checks clang-format.
# Each stage's build directory is removed once its tests pass (KEEP_BUILDS=1 keeps them), and
# both test builds carry line tables only (-g1: file:line in sanitizer reports), so the disk
# peak is one build plus the compiler cache rather than all three; `df` is printed per stage.
# Environment: FUZZ_SECONDS (default 30 per target), SKIP_SANITIZE=1, SKIP_FUZZ=1, JOBS,
# KEEP_BUILDS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${JOBS:-$(nproc)}
fuzz_seconds=${FUZZ_SECONDS:-30}

scripts/install-deps.sh
export CCACHE_DIR=${CCACHE_DIR:-$root/build/.ccache}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}

step() {
  printf '\n=== %s (%s)\n' "$1" "$(date +%H:%M:%S)"
  { df -h --output=avail,target . | tail -n 1 | awk '{print "disk free: " $1 " on " $2}'; } || true
}
prune() { [ "${KEEP_BUILDS:-0}" = 1 ] || rm -rf "$1"; }

step "build (Werror)"
cmake -S . -B build/ci -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRUNWARDEN_WERROR=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" >/dev/null
ninja -C build/ci -j"$jobs"

step "tests: unit + integration"
ctest --test-dir build/ci --output-on-failure -j"$jobs" --timeout 600
prune build/ci

if [ "${SKIP_SANITIZE:-0}" != 1 ]; then
  step "build (ASan + UBSan)"
  cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRUNWARDEN_WERROR=ON \
    -DRUNWARDEN_SANITIZE=address,undefined -DRUNWARDEN_BUILD_BENCH=OFF -DCMAKE_CXX_FLAGS_DEBUG=-g1 >/dev/null
  ninja -C build/asan -j"$jobs"
  # Every test but the netns one (root-only, and its checks are of the kernel's redirect):
  # the integration-labelled C++ tests drive real sockets through the proxy, and the Node
  # suite runs real clients against this sanitized runwarden binary.
  step "tests: unit + integration under ASan + UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan --output-on-failure -j"$jobs" -E integration_netns --timeout 900
  prune build/asan
fi

if [ "${SKIP_FUZZ:-0}" != 1 ] && [ -f fuzz/CMakeLists.txt ]; then
  step "fuzz (${fuzz_seconds}s per target)"
  cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DRUNWARDEN_FUZZ=ON -DRUNWARDEN_BUILD_TESTS=OFF -DRUNWARDEN_BUILD_BENCH=OFF \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" >/dev/null
  ninja -C build/fuzz -j"$jobs"
  for target in build/fuzz/fuzz/*_fuzz; do
    [ -x "$target" ] || continue
    name=$(basename "$target")
    corpus=build/fuzz/corpus/$name
    mkdir -p "$corpus"
    seeds=()
    [ -d "fuzz/corpus/$name" ] && seeds=("fuzz/corpus/$name")
    echo "fuzz: $name"
    # The whole output goes to a log; a failure prints its end (the sanitizer's report and
    # stack), a pass only the last lines.
    log=build/fuzz/$name.log
    if ! "$target" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=0 -artifact_prefix="build/fuzz/$name-" "$corpus" "${seeds[@]}" \
      >"$log" 2>&1; then
      grep -v -E '^[0-9T:.-]+Z (debug|info|warn) ' "$log" | tail -n 120
      echo "fuzz: $name failed (full output: $log)"
      exit 1
    fi
    tail -n 3 "$log"
  done
fi

step "clang-format"
files=$(git ls-files '*.cpp' '*.hpp')
if [ -n "$files" ]; then
  clang-format --dry-run --Werror $files
fi

step "all tests passed"
