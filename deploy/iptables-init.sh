#!/usr/bin/env bash
# runwarden iptables init: sends the pod's outbound TCP to runwarden's transparent listener.
#
# Run once per pod network namespace, before the agent starts (Kubernetes init container with
# NET_ADMIN + NET_RAW, as root). It owns one nat chain, RUNWARDEN_OUTPUT, jumped to from nat
# OUTPUT; re-running flushes and rebuilds that chain, so it is idempotent.
#
#   iptables-init.sh            install (or refresh) the rules
#   iptables-init.sh --dry-run  print the commands, change nothing (no root needed)
#   iptables-init.sh --remove   delete the jump and the chain (IPv4 and IPv6)
#
# Environment (all validated; anything implausible is an error, never a silent default):
#   RUNWARDEN_PORTS             comma list of destination TCP ports to redirect   [80,443]
#   RUNWARDEN_UID               runwarden's UID: its own upstream traffic is never redirected
#                               (-m owner ! --uid-owner), so it cannot loop to itself  [15001]
#   RUNWARDEN_GID               optional: also exempt sockets whose primary GID is this  []
#   RUNWARDEN_TRANSPARENT_PORT  the transparent listener's port                     [15006]
#   RUNWARDEN_EXCLUDE_CIDRS     comma list of destination CIDRs left untouched (IPv4 or IPv6) []
#   RUNWARDEN_IPV6              auto | on | off: also program ip6tables             [auto]
#                               auto: when ip6tables and its nat table work here; when they
#                               do not but this namespace has a global IPv6 address, fail
#                               (IPv6 egress would bypass runwarden) instead of skipping
#   RUNWARDEN_IPTABLES          iptables binary                                    [iptables]
#   RUNWARDEN_IP6TABLES         ip6tables binary                                   [ip6tables]
#
# Loopback traffic (-o lo, 127.0.0.0/8, ::1) is never redirected: the agent talking to
# runwarden's explicit proxy or admin port, and anything else on localhost, is left alone.
# REDIRECT in nat OUTPUT rewrites the destination to 127.0.0.1 (IPv4) or ::1 (IPv6), so the
# transparent listener must listen on both (listen.transparent in runwarden.yaml:
# [127.0.0.1:15006, "[::1]:15006"], or one dual-stack "[::]:15006").
set -euo pipefail

readonly CHAIN=RUNWARDEN_OUTPUT
readonly PROG=${0##*/}

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}
log() { echo "$PROG: $*" >&2; }

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

mode=install
for arg in "$@"; do
  case "$arg" in
  --dry-run) dry_run=1 ;;
  --remove) mode=remove ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) die "unknown argument '$arg' (try --help)" ;;
  esac
done
dry_run=${dry_run:-0}

ports_csv=${RUNWARDEN_PORTS-80,443}
uid=${RUNWARDEN_UID-15001}
gid=${RUNWARDEN_GID-}
tport=${RUNWARDEN_TRANSPARENT_PORT-15006}
exclude_csv=${RUNWARDEN_EXCLUDE_CIDRS-}
ipv6_mode=${RUNWARDEN_IPV6-auto}
ipt4=${RUNWARDEN_IPTABLES-iptables}
ipt6=${RUNWARDEN_IP6TABLES-ip6tables}

# ---- validation -------------------------------------------------------------------------

is_uint() { [[ $1 =~ ^[0-9]{1,10}$ ]]; }

check_port() { # name value
  if ! is_uint "$2" || ((10#$2 < 1 || 10#$2 > 65535)); then
    die "$1: '$2' is not a TCP port (1-65535)"
  fi
}

ports=()
[[ -n $ports_csv ]] || die "RUNWARDEN_PORTS is empty: nothing would be redirected"
IFS=, read -r -a raw_ports <<<"$ports_csv"
for p in "${raw_ports[@]}"; do
  p=${p//[[:space:]]/}
  check_port RUNWARDEN_PORTS "$p"
  ports+=("$((10#$p))")
done
((${#ports[@]} > 0)) || die "RUNWARDEN_PORTS has no port"

if ! is_uint "$uid" || ((10#$uid > 4294967294)); then die "RUNWARDEN_UID: '$uid' is not a numeric UID"; fi
uid=$((10#$uid))
((uid != 0)) || die "RUNWARDEN_UID is 0: exempting root would let any root process bypass runwarden"
if [[ -n $gid ]]; then
  if ! is_uint "$gid" || ((10#$gid > 4294967294)); then die "RUNWARDEN_GID: '$gid' is not a numeric GID"; fi
  gid=$((10#$gid))
  ((gid != 0)) || die "RUNWARDEN_GID is 0: exempting group root would be a bypass"
fi
check_port RUNWARDEN_TRANSPARENT_PORT "$tport"
tport=$((10#$tport))
for p in "${ports[@]}"; do
  # Redirecting the listener's own port is harmless for remote hosts but almost always a typo.
  ((p != tport)) || die "RUNWARDEN_PORTS contains the transparent port $tport"
done

valid_ipv4_cidr() {
  local addr=${1%/*} len=32 o
  [[ $1 == */* ]] && len=${1#*/}
  [[ $addr =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  for o in "${BASH_REMATCH[@]:1}"; do ((10#$o <= 255)) || return 1; done
  [[ $len =~ ^[0-9]{1,2}$ ]] && ((10#$len <= 32))
}

valid_ipv6_cidr() {
  local addr=${1%/*} len=128
  [[ $1 == */* ]] && len=${1#*/}
  [[ $addr == *:*:* || $addr == *::* ]] || return 1
  [[ $addr =~ ^[0-9A-Fa-f:]+(\.[0-9.]+)?$ ]] || return 1
  [[ $addr != *:::* ]] || return 1
  local doubles=${addr//[^:]/}
  ((${#doubles} <= 7)) || return 1
  [[ ${addr/::/} != *::* ]] || return 1 # at most one "::"
  [[ $len =~ ^[0-9]{1,3}$ ]] && ((10#$len <= 128))
}

excludes4=()
excludes6=()
if [[ -n ${exclude_csv//[[:space:],]/} ]]; then
  IFS=, read -r -a raw_cidrs <<<"$exclude_csv"
  for c in "${raw_cidrs[@]}"; do
    c=${c//[[:space:]]/}
    [[ -n $c ]] || continue
    if [[ $c == *:* ]]; then
      valid_ipv6_cidr "$c" || die "RUNWARDEN_EXCLUDE_CIDRS: '$c' is not an IPv6 address or CIDR"
      excludes6+=("$c")
    else
      valid_ipv4_cidr "$c" || die "RUNWARDEN_EXCLUDE_CIDRS: '$c' is not an IPv4 address or CIDR"
      excludes4+=("$c")
    fi
  done
fi

case "$ipv6_mode" in
on | true | 1 | yes) ipv6_mode=on ;;
off | false | 0 | no) ipv6_mode=off ;;
auto) ;;
*) die "RUNWARDEN_IPV6: '$ipv6_mode' is not auto, on or off" ;;
esac

# ---- execution --------------------------------------------------------------------------

run() {
  if ((dry_run)); then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

# True when this binary exists and can read its nat table (module loaded, we have NET_ADMIN).
nat_usable() { command -v "$1" >/dev/null 2>&1 && "$1" -w 5 -t nat -S OUTPUT >/dev/null 2>&1; }

# True when a non-loopback interface has a global-scope IPv6 address (/proc/net/if_inet6:
# address ifindex prefix scope flags name; scope 00 is global).
has_global_ipv6() {
  [[ -r /proc/net/if_inet6 ]] || return 1
  local scope name
  while read -r _ _ _ scope _ name; do
    [[ $name != lo && $scope == 00 ]] && return 0
  done </proc/net/if_inet6
  return 1
}

chain_exists() { ((!dry_run)) && "$1" -w 5 -t nat -S "$CHAIN" >/dev/null 2>&1; }

install_family() { # binary loopback-cidr excludes...
  local ipt=$1 loop=$2 c p
  shift 2
  if chain_exists "$ipt"; then
    run "$ipt" -w 5 -t nat -F "$CHAIN"
  else
    run "$ipt" -w 5 -t nat -N "$CHAIN"
  fi
  run "$ipt" -w 5 -t nat -A "$CHAIN" -o lo -j RETURN
  run "$ipt" -w 5 -t nat -A "$CHAIN" -d "$loop" -j RETURN
  run "$ipt" -w 5 -t nat -A "$CHAIN" -m owner --uid-owner "$uid" -j RETURN
  if [[ -n $gid ]]; then
    run "$ipt" -w 5 -t nat -A "$CHAIN" -m owner --gid-owner "$gid" -j RETURN
  fi
  for c in "$@"; do
    run "$ipt" -w 5 -t nat -A "$CHAIN" -d "$c" -j RETURN
  done
  for p in "${ports[@]}"; do
    run "$ipt" -w 5 -t nat -A "$CHAIN" -p tcp --dport "$p" -m owner ! --uid-owner "$uid" \
      -j REDIRECT --to-ports "$tport"
  done
  # The jump last, so the chain is complete before any packet can enter it.
  if ((dry_run)) || ! "$ipt" -w 5 -t nat -C OUTPUT -p tcp -j "$CHAIN" >/dev/null 2>&1; then
    run "$ipt" -w 5 -t nat -A OUTPUT -p tcp -j "$CHAIN"
  fi
}

remove_family() { # binary
  local ipt=$1 i
  for ((i = 0; i < 16; i++)); do # bounded: a duplicated jump is removed, a loop is not
    if ((dry_run)); then
      run "$ipt" -w 5 -t nat -D OUTPUT -p tcp -j "$CHAIN"
      break
    fi
    "$ipt" -w 5 -t nat -C OUTPUT -p tcp -j "$CHAIN" >/dev/null 2>&1 || break
    run "$ipt" -w 5 -t nat -D OUTPUT -p tcp -j "$CHAIN"
  done
  if ((dry_run)) || chain_exists "$ipt"; then
    run "$ipt" -w 5 -t nat -F "$CHAIN"
    run "$ipt" -w 5 -t nat -X "$CHAIN"
  fi
}

want_ipv6() {
  case "$ipv6_mode" in
  off) return 1 ;;
  on)
    ((dry_run)) || nat_usable "$ipt6" ||
      die "RUNWARDEN_IPV6=on but '$ipt6 -t nat' is not usable here (binary, kernel module or NET_ADMIN missing)"
    return 0
    ;;
  auto)
    if ((dry_run)); then
      command -v "$ipt6" >/dev/null 2>&1 && return 0
      log "# IPv6 skipped: $ipt6 not found (RUNWARDEN_IPV6=auto)"
      return 1
    fi
    if nat_usable "$ipt6"; then return 0; fi
    if has_global_ipv6; then
      die "RUNWARDEN_IPV6=auto: this namespace has a global IPv6 address but '$ipt6 -t nat' is not usable, so IPv6 egress would bypass runwarden; fix ip6tables, or set RUNWARDEN_IPV6=off if IPv6 egress is blocked elsewhere"
    fi
    log "IPv6 skipped: '$ipt6 -t nat' is not usable here and there is no global IPv6 address (RUNWARDEN_IPV6=auto)"
    return 1
    ;;
  esac
}

if ((!dry_run)); then
  nat_usable "$ipt4" ||
    die "'$ipt4 -t nat' is not usable (binary missing, no nat support, or no NET_ADMIN): refusing to start the pod unprotected"
fi

if [[ $mode == remove ]]; then
  remove_family "$ipt4"
  if [[ $ipv6_mode != off ]] && { ((dry_run)) || nat_usable "$ipt6"; }; then
    remove_family "$ipt6"
  fi
  ((dry_run)) || log "removed chain $CHAIN"
  exit 0
fi

if ((${#excludes6[@]} > 0)) && [[ $ipv6_mode == off ]]; then
  die "RUNWARDEN_EXCLUDE_CIDRS has IPv6 entries but RUNWARDEN_IPV6=off"
fi

# Decide about IPv6 before touching anything, so a refusal leaves no half-installed rules.
v6=no
if want_ipv6; then v6=yes; fi
install_family "$ipt4" 127.0.0.0/8 ${excludes4[@]+"${excludes4[@]}"}
if [[ $v6 == yes ]]; then
  install_family "$ipt6" ::1/128 ${excludes6[@]+"${excludes6[@]}"}
fi

if ((!dry_run)); then
  log "installed: tcp ports ${ports[*]} -> 127.0.0.1:$tport (and [::1] when ipv6=$v6), exempt uid $uid${gid:+ gid $gid}, loopback${excludes4[*]:+ ${excludes4[*]}}${excludes6[*]:+ ${excludes6[*]}}"
  "$ipt4" -w 5 -t nat -S "$CHAIN" >&2
  if [[ $v6 == yes ]]; then "$ipt6" -w 5 -t nat -S "$CHAIN" >&2; fi
fi
