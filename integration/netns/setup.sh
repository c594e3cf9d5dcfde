#!/usr/bin/env bash
# Builds the pod's network on this machine (see common.sh): two namespaces joined by a veth
# pair, the tools upstream servers, an agent-local server on loopback, and the REAL
# deploy/iptables-init.sh run inside the agent namespace. Root only. Undo with teardown.sh.
#   RWNT_ID=<id> integration/netns/setup.sh
set -euo pipefail
# shellcheck source=integration/netns/common.sh
source "$(dirname "$0")/common.sh"

[[ $(id -u) == 0 ]] || rwnt_die "needs root (network namespaces, iptables)"
for tool in ip iptables ip6tables node curl setpriv timeout; do
  command -v "$tool" >/dev/null || rwnt_die "'$tool' not found (scripts/install-deps.sh installs it)"
done
for ns in "$NS_AGENT" "$NS_TOOLS"; do
  [[ ! -e /run/netns/$ns ]] || rwnt_die "namespace $ns exists: run RWNT_ID=$RWNT_ID teardown.sh first"
done

mkdir -p "$STATE"
chmod 0755 "$STATE"
: >"$STATE/pids"

rwnt_log "namespaces $NS_AGENT, $NS_TOOLS"
ip netns add "$NS_AGENT"
ip netns add "$NS_TOOLS"
ip link add "$VETH_AGENT" type veth peer name "$VETH_TOOLS"
ip link set "$VETH_AGENT" netns "$NS_AGENT"
ip link set "$VETH_TOOLS" netns "$NS_TOOLS"

ip -n "$NS_AGENT" link set lo up
ip -n "$NS_AGENT" addr add "$AGENT4/24" dev "$VETH_AGENT"
ip -n "$NS_AGENT" addr add "$AGENT6/64" dev "$VETH_AGENT" nodad
ip -n "$NS_AGENT" link set "$VETH_AGENT" up
ip -n "$NS_AGENT" route add "$EXCLUDE4" via "$TOOLS4" dev "$VETH_AGENT"
ip -n "$NS_AGENT" -6 route add "$EXCLUDE6" via "$TOOLS6" dev "$VETH_AGENT"

ip -n "$NS_TOOLS" link set lo up
ip -n "$NS_TOOLS" addr add "$TOOLS4/24" dev "$VETH_TOOLS"
ip -n "$NS_TOOLS" addr add "$TOOLS4_EXCLUDED/24" dev "$VETH_TOOLS"
ip -n "$NS_TOOLS" addr add "$TOOLS4_TLS/24" dev "$VETH_TOOLS"
ip -n "$NS_TOOLS" addr add "$TOOLS4_OTHER/24" dev "$VETH_TOOLS"
ip -n "$NS_TOOLS" addr add "$TOOLS6/64" dev "$VETH_TOOLS" nodad
ip -n "$NS_TOOLS" addr add "$TOOLS6_TLS/64" dev "$VETH_TOOLS" nodad
ip -n "$NS_TOOLS" addr add "$TOOLS6_OTHER/64" dev "$VETH_TOOLS" nodad
ip -n "$NS_TOOLS" addr add "$TOOLS6_EXCLUDED/64" dev "$VETH_TOOLS" nodad
ip -n "$NS_TOOLS" link set "$VETH_TOOLS" up

# Safety: no default route anywhere, so nothing in these namespaces can reach a real network.
if ip -n "$NS_AGENT" route get 192.0.2.1 >/dev/null 2>&1 ||
  ip -n "$NS_TOOLS" route get 192.0.2.1 >/dev/null 2>&1; then
  rwnt_die "a namespace has a route beyond the test bed"
fi

# Upstream "tool APIs": listed ports (80, 443), an unlisted port (8080), excluded CIDRs.
start_recorder "$NS_TOOLS" 0 upstream tools \
  "$TOOLS4:80" "$TOOLS4:443" "$TOOLS4:8080" "$TOOLS4_EXCLUDED:80" "[$TOOLS6]:80" "[$TOOLS6]:443" \
  "[$TOOLS6]:8080" "[$TOOLS6_EXCLUDED]:80"
# HTTPS tool APIs for the transparent TLS path: a certificate for $API_NAME from a per-run
# test CA (integration/lib/pki.mjs), trusted by runwarden's tls.upstream_trust.
mkdir -p "$STATE/pki"
# shellcheck disable=SC2016 # JavaScript in single quotes
node --input-type=module -e '
  const { makeCa, issueServerCert } = await import(process.argv[1]);
  const [dir, ip1, ip2, ...names] = process.argv.slice(2);
  const ca = makeCa(dir, "tools-ca");
  issueServerCert(dir, ca, "api", [...names.map((n) => `DNS:${n}`), `IP:${ip1}`, `IP:${ip2}`]);
' "$RWNT_REPO/integration/lib/pki.mjs" "$STATE/pki" "$TOOLS4_TLS" "$TOOLS4_OTHER" \
  "$API_NAME" "$API6_NAME" "$DUAL_NAME"
chmod -R a+rX "$STATE/pki"
RWNT_TLS_CERT=$STATE/pki/api.pem RWNT_TLS_KEY=$STATE/pki/api.key \
  start_recorder "$NS_TOOLS" 0 upstream-tls tools-tls "$TOOLS4_TLS:443" "$TOOLS4_OTHER:443" \
  "[$TOOLS6_TLS]:443" "[$TOOLS6_OTHER]:443"
mkdir -p "$NS_ETC"
printf '127.0.0.1 localhost\n::1 localhost\n%s %s\n%s %s\n%s %s\n%s %s\n' \
  "$TOOLS4_TLS" "$API_NAME" "$TOOLS6_TLS" "$API6_NAME" \
  "$TOOLS4_TLS" "$DUAL_NAME" "$TOOLS6_TLS" "$DUAL_NAME" >"$NS_ETC/hosts"
# A name server that never answers (the tools namespace silently drops its queries), so that a
# name outside the hosts file hangs in the resolver for 10 s: runwarden must give up at
# upstream_connect_timeout.
printf 'nameserver %s\noptions timeout:10 attempts:1\n' "$TOOLS4" >"$NS_ETC/resolv.conf"
ip netns exec "$NS_TOOLS" iptables -w 5 -A INPUT -p udp --dport 53 -j DROP
ip netns exec "$NS_TOOLS" iptables -w 5 -A INPUT -p tcp --dport 53 -j DROP

# Something on the agent's own loopback and own address, which must never be redirected.
start_recorder "$NS_AGENT" 0 upstream agent-local "127.0.0.1:80" "$AGENT4:80" "[::1]:80"

rwnt_log "deploy/iptables-init.sh in $NS_AGENT (RUNWARDEN_UID=$RW_UID)"
ip netns exec "$NS_AGENT" env RUNWARDEN_UID="$RW_UID" RUNWARDEN_PORTS=80,443 \
  RUNWARDEN_TRANSPARENT_PORT="$TRANSPARENT_PORT" RUNWARDEN_EXCLUDE_CIDRS="$EXCLUDE_CIDRS" \
  RUNWARDEN_IPV6=on "$RWNT_REPO/deploy/iptables-init.sh" 2>"$STATE/iptables-init.log" ||
  {
    cat "$STATE/iptables-init.log" >&2
    rwnt_die "iptables-init.sh failed"
  }
rwnt_log "ready (state in $STATE)"
