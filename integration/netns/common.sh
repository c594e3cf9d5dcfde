# shellcheck shell=bash disable=SC2034 # sourced: the names are used by the scripts
# Shared names for the netns test bed; sourced by setup.sh, teardown.sh, run-transparent-test.sh.
# Everything lives in two network namespaces this test bed creates and deletes itself:
#   rwnt-<id>-agent  the pod: the agent client, runwarden (or its stand-in), the REAL
#                    deploy/iptables-init.sh rules; no default route, so nothing can leave it
#                    except over the veth to the tools namespace.
#   rwnt-<id>-tools  the tool APIs: upstream servers at their own addresses.
# Addresses (10.233.100.0/24, 10.233.101.0/24, fd00:233:100::/64, fd00:233:101::/64) exist
# only on that veth pair; IPv6 ones are added with nodad (usable at once, no DAD wait).

RWNT_ID=${RWNT_ID:-1}
[[ $RWNT_ID =~ ^[a-z0-9]{1,6}$ ]] || {
  echo "rwnt: RWNT_ID '$RWNT_ID' must be 1-6 of [a-z0-9]" >&2
  exit 2
}
RWNT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RWNT_REPO=$(cd "$RWNT_DIR/../.." && pwd)
NS_AGENT=rwnt-$RWNT_ID-agent
NS_TOOLS=rwnt-$RWNT_ID-tools
VETH_AGENT=rwnt${RWNT_ID}a
VETH_TOOLS=rwnt${RWNT_ID}t
STATE=/tmp/rwnt-$RWNT_ID # fixed shape: teardown.sh removes it

AGENT4=10.233.100.1
TOOLS4=10.233.100.2
TOOLS4_EXCLUDED=10.233.101.2 # inside RUNWARDEN_EXCLUDE_CIDRS
EXCLUDE4=10.233.101.0/24
EXCLUDE6=fd00:233:101::/64
EXCLUDE_CIDRS=$EXCLUDE4,$EXCLUDE6
TOOLS4_TLS=10.233.100.3   # HTTPS tool API, named $API_NAME (hosts file of the agent namespace)
TOOLS4_OTHER=10.233.100.4 # HTTPS server the name does NOT resolve to (SNI mismatch target)
API_NAME=api.tools.test
AGENT6=fd00:233:100::1
TOOLS6=fd00:233:100::2
TOOLS6_TLS=fd00:233:100::3      # HTTPS tool API over IPv6: $API6_NAME (AAAA only), $DUAL_NAME
TOOLS6_OTHER=fd00:233:100::4    # IPv6 HTTPS server no name resolves to (SNI mismatch target)
TOOLS6_EXCLUDED=fd00:233:101::2 # inside RUNWARDEN_EXCLUDE_CIDRS
API6_NAME=api6.tools.test       # hosts file: AAAA $TOOLS6_TLS only
DUAL_NAME=dual.tools.test       # hosts file: A $TOOLS4_TLS and AAAA $TOOLS6_TLS

RW_UID=${RWNT_RUNWARDEN_UID:-15001} # runwarden's own user (exempt from the redirect)
AGENT_UID=${RWNT_AGENT_UID:-15002}  # the agent's user
TRANSPARENT_PORT=${RWNT_TRANSPARENT_PORT:-15006}
PROXY_PORT=15001 # runwarden's explicit proxy listener (loopback of the agent namespace)
ADMIN_PORT=15000
# Per-namespace name resolution: `ip netns exec` bind-mounts /etc/netns/<ns>/hosts.
NS_ETC=/etc/netns/$NS_AGENT

rwnt_log() { echo "rwnt[$RWNT_ID]: $*" >&2; }
rwnt_die() {
  rwnt_log "error: $*"
  exit 1
}

# Runs a command in the agent namespace as UID $1 (no supplementary groups, no capabilities).
in_agent_as() {
  local uid=$1
  shift
  ip netns exec "$NS_AGENT" setpriv --reuid="$uid" --regid="$uid" --clear-groups \
    --inh-caps=-all env -u http_proxy -u HTTP_PROXY -u https_proxy -u HTTPS_PROXY \
    -u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY "$@"
}

# Starts a recorder.mjs server in the background inside namespace $1 as UID $2; records its pid.
start_recorder() { # ns uid mode name addr...
  local ns=$1 uid=$2 mode=$3 name=$4
  shift 4
  local log=$STATE/$name.jsonl ready=$STATE/$name.ready
  : >"$log"
  : >"$ready" # written (non-empty) by the server once every listener is bound
  chown "$uid:$uid" "$log" "$ready"
  ip netns exec "$ns" setpriv --reuid="$uid" --regid="$uid" --clear-groups \
    env RWNT_LIFETIME_MS="${RWNT_LIFETIME_MS:-180000}" \
    node "$RWNT_DIR/recorder.mjs" "$mode" "$name" "$log" "$ready" "$@" \
    >>"$STATE/$name.out" 2>&1 &
  echo $! >>"$STATE/pids"
  echo $! >"$STATE/$name.pid"
  local i
  for ((i = 0; i < 100; i++)); do # at most 10 s
    [[ -s $ready ]] && return 0
    kill -0 $! 2>/dev/null || break
    sleep 0.1
  done
  cat "$STATE/$name.out" >&2 || true
  rwnt_die "$name did not start on $*"
}
