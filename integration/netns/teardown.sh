#!/usr/bin/env bash
# Undoes setup.sh: stops the processes it started (by pid), deletes both namespaces (which
# takes their veth pair and iptables rules with them) and the state directory.
# Safe to run twice or after a half-finished setup. RWNT_KEEP=1 keeps the logs.
set -uo pipefail
# shellcheck source=integration/netns/common.sh
source "$(dirname "$0")/common.sh"

[[ $(id -u) == 0 ]] || rwnt_die "needs root"

pids=()
[[ -f $STATE/pids ]] && mapfile -t pids <"$STATE/pids"
for ns in "$NS_AGENT" "$NS_TOOLS"; do # anything else still running inside our namespaces
  [[ -e /run/netns/$ns ]] && mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns" 2>/dev/null)
done
for pid in "${pids[@]}"; do
  [[ $pid =~ ^[0-9]+$ ]] && kill "$pid" 2>/dev/null
done
for ((i = 0; i < 30; i++)); do # at most 3 s, then SIGKILL
  alive=0
  for pid in "${pids[@]}"; do [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && alive=1; done
  ((alive)) || break
  sleep 0.1
done
for pid in "${pids[@]}"; do [[ $pid =~ ^[0-9]+$ ]] && kill -9 "$pid" 2>/dev/null; done

for ns in "$NS_AGENT" "$NS_TOOLS"; do
  [[ -e /run/netns/$ns ]] && ip netns del "$ns"
done
ip link del "$VETH_AGENT" 2>/dev/null # only if a setup died between add and move
[[ -d $NS_ETC ]] && rm -rf -- "$NS_ETC" # our per-namespace hosts file only
if [[ ${RWNT_KEEP:-0} != 1 && -d $STATE ]]; then
  rm -rf -- "$STATE"
fi
for ns in "$NS_AGENT" "$NS_TOOLS"; do
  [[ ! -e /run/netns/$ns ]] || rwnt_die "namespace $ns is still there"
done
rwnt_log "torn down"
exit 0
