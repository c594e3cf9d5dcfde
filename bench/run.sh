#!/usr/bin/env bash
# Reproduces every number in BENCHMARKS.md in one run (about 6-8 minutes):
#   1. policy_bench  (decide() at 10/100/1000 actions, without and with a 4 KiB JSON body)
#   2. audit_bench   (append throughput with redaction + hash chain; redaction MB/s)
#   3. proxy         direct vs runwarden (and squid, haproxy as references) on loopback:
#                    plain HTTP keep-alive at 1 and 32 connections (wrk, absolute-form),
#                    intercepted HTTPS keep-alive, new intercepted connections per second,
#                    proxy CPU per request, RSS idle and with 10,000 idle connections.
# Not part of the test suite (CI does not run it). Loopback only. Everything it starts is
# stopped on exit (trap). Every wait is bounded.
#
# Environment: BUILD (default build-bench), BENCH_SECONDS per measurement (default 5),
# BENCH_ROUNDS (default 3; each figure is the median over rounds, targets interleaved per
# round so that background load hits them alike), IDLE_CONNS (default 10000),
# IDLE_FWD_CONNS (default 9000),
# BENCH_SKIP_BUILD=1 to use the binaries already built, KEEP_WORK=1 to keep the temp dir (configs, logs, raw results).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_FWD_CONNS=${IDLE_FWD_CONNS:-9000}
WORK=$(mktemp -d /tmp/runwarden-bench.XXXXXX)
chmod 755 "$WORK" # squid drops to its own user and must reach its directory
RESULTS=$WORK/results.jsonl
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # bounded: give each 5 s, then SIGKILL
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ tools and build
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get install -y "${need[@]}" >/dev/null
fi
if ! command -v squid >/dev/null || ! command -v haproxy >/dev/null; then
  log "trying to install squid and haproxy (references; optional)"
  apt-get install -y squid haproxy >/dev/null 2>&1 || log "squid/haproxy not installable: references skipped"
fi

if [[ "${BENCH_SKIP_BUILD:-0}" == 1 ]]; then
  log "BENCH_SKIP_BUILD=1: using the binaries already in $BUILD"
else
  log "Release build in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNWARDEN_BUILD_TESTS=OFF >/dev/null
  ninja -C "$BUILD" -j2 runwarden policy_bench audit_bench >/dev/null
fi
RW=$BUILD/app/runwarden
[[ -x $RW ]] || RW=$(find "$BUILD" -type f -name runwarden -perm -u+x | head -1)
CLIENT=$BUILD/bench-proxy/load_client
if [[ ! -x $CLIENT || $ROOT/bench/proxy/load_client.cpp -nt $CLIENT ]]; then
  log "building load_client"
  mkdir -p "$(dirname "$CLIENT")"
  c++ -std=c++20 -O2 "$ROOT/bench/proxy/load_client.cpp" -o "$CLIENT" -lssl -lcrypto -lpthread
fi

machine() {
  local rev; rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] && rev+="+uncommitted"
  printf '{"kind":"machine","rev":"%s","cores":%s,"load":"%s","cpu":"%s","date":"%s"}\n' "$rev" "$(nproc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(date -u +%FT%TZ)"
}
machine >>"$RESULTS"

# ------------------------------------------------------------------ micro benchmarks
log "policy_bench"
"$BUILD/bench/policy_bench" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_format=json >"$WORK/policy.json" 2>/dev/null
log "audit_bench"
(cd "$WORK" && "$BUILD/bench/audit_bench" --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true --benchmark_min_time=1 \
  --benchmark_format=json >"$WORK/audit.json" 2>/dev/null)

# ------------------------------------------------------------------ proxy set-up
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { # bounded: 10 s
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "nothing listens on 127.0.0.1:$1"; return 1
}
P_HTTP=$(free_port); P_HTTPS=$(free_port); P_RW=$(free_port); P_ADMIN=$(free_port)
P_SQUID=$(free_port); P_HAP=$(free_port)

# Upstream PKI: an ECDSA P-256 CA and a leaf for IP 127.0.0.1 (the same key type as
# runwarden's interception leaves, so direct and intercepted handshakes cost alike).
mkdir -p "$WORK/pki"
(
  cd "$WORK/pki"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -subj "/CN=bench upstream CA" -days 2 -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out leaf.key 2>/dev/null
  openssl req -new -key leaf.key -subj "/CN=127.0.0.1" -out leaf.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out leaf.pem 2>/dev/null
)

# nginx: the upstream for every path (direct and proxied), one worker, no access log.
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 40000; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $WORK/nginx/tmp;
  server {
    listen 127.0.0.1:$P_HTTP backlog=4096;
    listen 127.0.0.1:$P_HTTPS ssl backlog=4096;
    ssl_certificate $WORK/pki/leaf.pem;
    ssl_certificate_key $WORK/pki/leaf.key;
    ssl_session_tickets off;
    ssl_session_cache off;
    default_type application/json;
    location / { return 200 '{"id":"inv_0042","status":"paid","amount":1999,"currency":"eur","customer":"cus_7","lines":[{"sku":"plan-pro","qty":1}]}\n'; }
  }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off; master_process off;' &
PIDS+=($!); NGINX_PID=$!
wait_port "$P_HTTP"; wait_port "$P_HTTPS"

# runwarden: the example catalogue plus the bench actions; a bench runbook that names
# actions from several example runbooks; audit to a file at the default durability
# (write(2) before the response, fsync every 50 ms); default log level (info).
mkdir -p "$WORK/rw/runbooks"
"$RW" ca init "$WORK/rw/certs" --name "runwarden bench CA" --days 2 >/dev/null
{
  cat "$ROOT/examples/actions.yaml"
  cat <<EOF
  # ---------------------------------------------------------------- bench upstream
  bench_read:
    - {method: [GET, HEAD], host: 127.0.0.1, port: [$P_HTTP, $P_HTTPS], path: "/bench/**"}
  bench_delete:
    - {method: DELETE, host: 127.0.0.1, port: [$P_HTTP, $P_HTTPS], path: "/**"}
EOF
} >"$WORK/rw/actions.yaml"
cat >"$WORK/rw/runbooks/bench.yaml" <<'EOF'
runbook: bench
owner: bench
trigger: {manual: "bench/run.sh"}
allowed_actions:
  read_only: [bench_read, fetch_logs, fetch_metrics, stripe_read, crm_read, zendesk_read_ticket]
  allowed: [demo_open_ticket, demo_small_refund, issue_small_refund]
  denied: [bench_delete, demo_delete_anything, crm_delete_record, refund_to_other_destination]
unmatched: deny
EOF
cat >"$WORK/rw/runwarden.yaml" <<EOF
listen:
  proxy: 127.0.0.1:$P_RW
  admin: 127.0.0.1:$P_ADMIN
agent: {id: bench-agent}
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: bench
tls:
  ca_cert: certs/ca.pem
  ca_key: certs/ca.key
  upstream_trust: $WORK/pki/ca.pem
audit:
  path: audit/audit.jsonl
limits:
  max_connections: 20000
EOF
"$RW" check -c "$WORK/rw/runwarden.yaml" >/dev/null
(cd "$WORK/rw" && exec "$RW" serve -c "$WORK/rw/runwarden.yaml" 2>"$WORK/rw/serve.log" >&2) &
PIDS+=($!); RW_PID=$!
wait_port "$P_RW"

declare -A PROXY_PID=([runwarden]=$RW_PID)
declare -A PROXY_PORT=([runwarden]=$P_RW)

if command -v squid >/dev/null; then
  mkdir -p "$WORK/squid"
  chmod 777 "$WORK/squid"
  cat >"$WORK/squid/squid.conf" <<EOF
http_port 127.0.0.1:$P_SQUID
http_access allow all
cache deny all
cache_mem 8 MB
access_log none
cache_log $WORK/squid/cache.log
pid_filename $WORK/squid/squid.pid
coredump_dir $WORK/squid
max_filedescriptors 65536
via off
forwarded_for delete
shutdown_lifetime 1 seconds
EOF
  chown proxy "$WORK/squid" 2>/dev/null || true
  squid -N -f "$WORK/squid/squid.conf" >"$WORK/squid/out.log" 2>&1 &
  PIDS+=($!); PROXY_PID[squid]=$!; PROXY_PORT[squid]=$P_SQUID
  wait_port "$P_SQUID" || { unset 'PROXY_PID[squid]'; unset 'PROXY_PORT[squid]'; }
fi
if command -v haproxy >/dev/null; then
  mkdir -p "$WORK/haproxy"
  # HAProxy has no forward-proxy mode: it accepts the absolute-form request and sends it to
  # the one configured server (the upstream), with keep-alive reuse on the server side.
  cat >"$WORK/haproxy/haproxy.cfg" <<EOF
global
  maxconn 9000
  nbthread 2
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  http-reuse always
frontend fe
  bind 127.0.0.1:$P_HAP
  default_backend be
backend be
  server up 127.0.0.1:$P_HTTP
EOF
  haproxy -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/out.log" 2>&1 &
  PIDS+=($!); PROXY_PID[haproxy]=$!; PROXY_PORT[haproxy]=$P_HAP
  wait_port "$P_HAP" || { unset 'PROXY_PID[haproxy]'; unset 'PROXY_PORT[haproxy]'; }
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)

# Sanity: a request through runwarden must be allowed (200) and one DELETE refused (403).
code=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_RW" "http://127.0.0.1:$P_HTTP/bench/item")
[[ $code == 200 ]] || { log "runwarden did not forward GET /bench/item (HTTP $code)"; cat "$WORK/rw/serve.log" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_RW" -X DELETE "http://127.0.0.1:$P_HTTP/bench/item")
[[ $code == 403 ]] || { log "runwarden did not refuse DELETE (HTTP $code)"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/rw/certs/ca.pem" -x "http://127.0.0.1:$P_RW" "https://127.0.0.1:$P_HTTPS/bench/item")
[[ $code == 200 ]] || { log "runwarden did not intercept and forward HTTPS (HTTP $code)"; exit 1; }

sleep 1
printf '{"kind":"rss_idle","target":"runwarden","kib":%s}\n' "$(rss_kib "$RW_PID")" >>"$RESULTS"
for name in squid haproxy; do
  [[ -n ${PROXY_PID[$name]:-} ]] &&
    printf '{"kind":"rss_idle","target":"%s","kib":%s}\n' "$name" "$(rss_kib "${PROXY_PID[$name]}")" >>"$RESULTS"
done
printf '{"kind":"rss_idle","target":"nginx","kib":%s}\n' "$(rss_kib "$NGINX_PID")" >>"$RESULTS"

# wrk run: prints {"kind":"http","target":..,"conns":..,"rps":..,"p50_us":..,"requests":..,
# "non2xx":..,"cpu_us_per_req":..}
wrk_run() { # name conns
  local name=$1 conns=$2 out t0 t1 pid="" url
  if [[ $name == direct ]]; then
    url="http://127.0.0.1:$P_HTTP/bench/item"
    out=$(wrk -t1 -c"$conns" -d"${SECS}s" --latency "$url")
    pid=$NGINX_PID
  else
    pid=${PROXY_PID[$name]}
    t0=$(cpu_ticks "$pid")
    out=$(TARGET="127.0.0.1:$P_HTTP" wrk -t1 -c"$conns" -d"${SECS}s" --latency \
      -s "$ROOT/bench/proxy/absolute_form.lua" "http://127.0.0.1:${PROXY_PORT[$name]}")
    t1=$(cpu_ticks "$pid")
  fi
  echo "$out" >"$WORK/wrk-$name-$conns-$RANDOM.txt"
  python3 - "$name" "$conns" "${t0:-0}" "${t1:-0}" "$TCK" "$out" <<'PY' >>"$RESULTS"
import json, re, sys
name, conns, t0, t1, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
out = sys.argv[6]
def us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n = float(m.group(1))
    return n * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
reqs = int(re.search(r"(\d+) requests in", out).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
err = re.search(r"Socket errors: (.*)", out)
cpu = (t1 - t0) * 1e6 / tck / reqs if (name != "direct" and reqs) else None
print(json.dumps({"kind": "http", "target": name, "conns": conns, "rps": rps, "p50_us": p50,
                  "requests": reqs, "non2xx": int(non.group(1)) if non else 0,
                  "socket_errors": err.group(1) if err else "", "cpu_us_per_req": cpu}))
PY
}

tls_run() { # name(direct|runwarden) mode(keepalive|newconn) conns
  local name=$1 mode=$2 conns=$3 args=() t0=0 t1=0 out
  args=(--tls --target "127.0.0.1:$P_HTTPS" --path /bench/item --conns "$conns" --seconds "$SECS")
  [[ $mode == newconn ]] && args+=(--new-conn)
  if [[ $name == direct ]]; then
    args+=(--ca "$WORK/pki/ca.pem")
  else
    args+=(--ca "$WORK/rw/certs/ca.pem" --proxy "127.0.0.1:$P_RW")
    t0=$(cpu_ticks "$RW_PID")
  fi
  out=$("$CLIENT" "${args[@]}")
  [[ $name == direct ]] || t1=$(cpu_ticks "$RW_PID")
  python3 - "$name" "$mode" "$conns" "$t0" "$t1" "$TCK" "$out" <<'PY' >>"$RESULTS"
import json, sys
name, mode, conns, t0, t1, tck, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), json.loads(sys.argv[7])
cpu = (t1 - t0) * 1e6 / tck / out["requests"] if (name != "direct" and out["requests"]) else None
out.update({"kind": "tls", "target": name, "mode": mode, "conns": conns, "cpu_us_per_req": cpu})
print(json.dumps(out))
PY
}

# Warm-up (leaf cache, upstream pools, page cache), not recorded.
"$CLIENT" --tls --target "127.0.0.1:$P_HTTPS" --path /bench/item --conns 4 --seconds 1 \
  --ca "$WORK/rw/certs/ca.pem" --proxy "127.0.0.1:$P_RW" >/dev/null
TARGET="127.0.0.1:$P_HTTP" wrk -t1 -c8 -d1s -s "$ROOT/bench/proxy/absolute_form.lua" "http://127.0.0.1:$P_RW" >/dev/null

names=(direct runwarden)
[[ -n ${PROXY_PID[squid]:-} ]] && names+=(squid)
[[ -n ${PROXY_PID[haproxy]:-} ]] && names+=(haproxy)
for round in $(seq "$ROUNDS"); do
  log "round $round/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))"
  for conns in 1 32; do
    for name in "${names[@]}"; do wrk_run "$name" "$conns"; done
  done
  for mode in keepalive newconn; do
    c=32; [[ $mode == newconn ]] && c=8
    for name in direct runwarden; do tls_run "$name" "$mode" "$c"; done
  done
done

# RSS with idle keep-alive connections, each of which has done one request first. Two
# variants, because runwarden keeps a pooled upstream connection per client connection
# and the hard RLIMIT_NOFILE here may be 20000:
#   refused:   IDLE_CONNS connections whose request was refused by policy (403, audited),
#              so no upstream socket: the proxy's own per-connection cost.
#   forwarded: IDLE_FWD_CONNS connections whose request was forwarded (200), each holding
#              its pooled upstream connection.
idle_rss() { # name variant conns
  local name=$1 variant=$2 n=$3 pid=${PROXY_PID[$1]} port=${PROXY_PORT[$1]} line path=/bench/item status=200
  [[ $variant == refused ]] && { path=/not-in-the-catalogue; status=403; }
  coproc IDLE { exec "$CLIENT" --mode idle --conns "$n" --target "127.0.0.1:$P_HTTP" \
    --path "$path" --expect-status "$status" --proxy "127.0.0.1:$port" --hold 150; }
  local cpid=$IDLE_PID
  PIDS+=("$cpid")
  read -r -t 150 line <&"${IDLE[0]}" || line='{"open":0,"errors":-1}'
  sleep 1
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({"kind":"rss_conns","target":sys.argv[2],"variant":sys.argv[3],"conns":int(sys.argv[4]),"open":d["open"],"errors":d["errors"],"kib":int(sys.argv[5])}))' \
    "$line" "$name" "$variant" "$n" "$(rss_kib "$pid")" >>"$RESULTS"
  eval "exec ${IDLE[1]}>&-"
  for _ in $(seq 100); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  sleep 2
}
log "RSS with idle connections (limit $(ulimit -n) descriptors per process)"
idle_rss runwarden refused "$IDLE_CONNS"
idle_rss runwarden forwarded "$IDLE_FWD_CONNS"
# squid refuses nothing and holds server connections in a shared pool.
[[ -n ${PROXY_PID[squid]:-} ]] && idle_rss squid forwarded "$IDLE_FWD_CONNS"

machine >>"$RESULTS"
# Audit records written during the run must verify (the chain was kept under load).
timeout 180 "$RW" audit verify "$WORK/rw/audit" >"$WORK/verify.txt" 2>&1 &&
  echo '{"kind":"audit_verify","ok":true}' >>"$RESULTS" ||
  echo '{"kind":"audit_verify","ok":false}' >>"$RESULTS"

python3 "$ROOT/bench/proxy/report.py" "$RESULTS" "$WORK/policy.json" "$WORK/audit.json"
