#!/usr/bin/env bash
# Container health check without curl: one HTTP/1.1 GET over bash's /dev/tcp to runwarden's
# admin /healthz (loopback by default). Healthy only on a 200 status line within the deadline.
#   RUNWARDEN_HEALTH_ADDR  host:port of listen.admin   [127.0.0.1:15000]
#   RUNWARDEN_HEALTH_PATH  path to check               [/healthz]
set -euo pipefail
addr=${RUNWARDEN_HEALTH_ADDR:-127.0.0.1:15000}
path=${RUNWARDEN_HEALTH_PATH:-/healthz}
host=${addr%:*}
port=${addr##*:}
host=${host#[}
host=${host%]}
[[ $port =~ ^[0-9]{1,5}$ ]] || {
  echo "healthcheck: bad RUNWARDEN_HEALTH_ADDR '$addr'" >&2
  exit 1
}
# The whole exchange is bounded by `timeout`; /dev/tcp itself has no deadline.
status=$(timeout 3 bash -c '
  exec 3<>"/dev/tcp/$0/$1" || exit 1
  printf "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
  IFS= read -r line <&3 || exit 1
  printf "%s" "$line"
' "$host" "$port" "$path") || {
  echo "healthcheck: no answer from $addr$path" >&2
  exit 1
}
status=${status%$'\r'}
if [[ $status =~ ^HTTP/1\.[01]\ 200( |$) ]]; then
  exit 0
fi
echo "healthcheck: $addr$path answered '$status'" >&2
exit 1
