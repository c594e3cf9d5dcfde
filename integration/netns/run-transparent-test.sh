#!/usr/bin/env bash
# End-to-end test of transparent mode: the REAL deploy/iptables-init.sh in a namespace that
# stands for the pod, the REAL `runwarden serve` (RUNWARDEN_BIN) running there as its own
# user with listen.transparent, and real upstream servers (HTTP and HTTPS) in another
# namespace. Clients with no proxy settings (curl, Node) are intercepted, over IPv4 and IPv6
# (iptables and ip6tables REDIRECT; listen.transparent as a list, then as dual-stack [::]).
# Run as root:
#   sudo RUNWARDEN_BIN=build/app/runwarden integration/netns/run-transparent-test.sh
# Exits non-zero on any failure (and when not root); always tears down (trap).
set -euo pipefail
export RWNT_ID=${RWNT_ID:-$(printf '%x' $$)}
# shellcheck source=integration/netns/common.sh
source "$(dirname "$0")/common.sh"
[[ $(id -u) == 0 ]] || rwnt_die "needs root (network namespaces, iptables): sudo $0"
ip netns list >/dev/null 2>&1 || rwnt_die "'ip netns' is not usable here"
BIN=${RUNWARDEN_BIN:-}
[[ -n $BIN && -x $BIN ]] || rwnt_die "RUNWARDEN_BIN must name the runwarden binary (got '$BIN')"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
start=$(date +%s.%N)

cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -f $STATE/rw/runwarden.log ]]; then
    echo "--- runwarden log (tail)" >&2
    tail -n 40 "$STATE/rw/runwarden.log" >&2 || true
  fi
  "$RWNT_DIR/teardown.sh" || rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$RWNT_DIR/setup.sh"

# runwarden's config, policy and CA, owned by its own user.
RW=$STATE/rw
mkdir -p "$RW/runbooks" "$RW/audit"
"$BIN" ca init "$RW/certs" --name "runwarden netns CA" --days 2 >/dev/null
cat >"$RW/actions.yaml" <<YAML
actions:
  read_tool:
    - {method: [GET, POST], host: ["$TOOLS4", "[$TOOLS6]"], port: [80], path: "/ok/**"}
  read_api:
    - {method: GET, host: ["$API_NAME", "$API6_NAME", "$DUAL_NAME"], port: [443], path: "/ok/**"}
  forbidden_area:
    - {host: ["$TOOLS4", "[$TOOLS6]", "$API_NAME", "$API6_NAME"], path: "/denied/**"}
YAML
cat >"$RW/runbooks/netns.yaml" <<YAML
runbook: netns
owner: integration-tests
trigger: {alert: netns_suite}
allowed_actions:
  read_only: [read_tool, read_api]
  denied: [forbidden_area]
unmatched: deny
YAML
cat >"$RW/runwarden.yaml" <<YAML
listen:
  proxy: 127.0.0.1:$PROXY_PORT
  transparent: [127.0.0.1:$TRANSPARENT_PORT, "[::1]:$TRANSPARENT_PORT"]
  admin: 127.0.0.1:$ADMIN_PORT
agent: {id: netns-agent}
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: netns
tls:
  ca_cert: certs/ca.pem
  ca_key: certs/ca.key
  upstream_trust: $STATE/pki/tools-ca.pem
audit:
  path: audit/audit.jsonl
  fsync: always
limits:
  upstream_connect_timeout: 3s
  upstream_response_timeout: 5s
YAML
# The same config with one dual-stack transparent listener, for the last part of the test.
sed "s|^  transparent: .*|  transparent: \"[::]:$TRANSPARENT_PORT\"|" "$RW/runwarden.yaml" >"$RW/runwarden-dual.yaml"
grep -q '^  transparent: "\[::\]:' "$RW/runwarden-dual.yaml" || rwnt_die "runwarden-dual.yaml has no [::] listener"
chown -R "$RW_UID:$RW_UID" "$RW"
chmod a+r "$RW/certs/ca.pem"

# start_runwarden CONFIG: runwarden serve as its own user in the agent namespace, until healthy.
start_runwarden() {
  ip netns exec "$NS_AGENT" setpriv --reuid="$RW_UID" --regid="$RW_UID" --clear-groups \
    --inh-caps=-all timeout 300 "$BIN" serve -c "$1" >>"$RW/runwarden.log" 2>&1 &
  echo $! >>"$STATE/pids"
  echo $! >"$STATE/runwarden.pid"
  local i
  for ((i = 0; i < 100; i++)); do # at most 10 s
    ip netns exec "$NS_AGENT" timeout 1 curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz" && break
    kill -0 "$(cat "$STATE/runwarden.pid")" 2>/dev/null || break
    sleep 0.1
  done
  ip netns exec "$NS_AGENT" timeout 1 curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz" ||
    { cat "$RW/runwarden.log" >&2; rwnt_die "runwarden did not start with $1"; }
}
stop_runwarden() {
  local pid i
  pid=$(cat "$STATE/runwarden.pid")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done # at most 10 s
}
start_runwarden "$RW/runwarden.yaml"
AUDIT=$RW/audit/audit.jsonl

passed=0
failed=0
ok() {
  echo "ok - $1"
  passed=$((passed + 1))
}
not_ok() {
  echo "not ok - $1"
  shift
  local line
  for line in "$@"; do echo "    $line"; done
  failed=$((failed + 1))
}

# curl_as UID URL -> the body on stdout; exit code is curl's (bounded: 3 s, killed at 5 s).
curl_as() { in_agent_as "$1" timeout 5 curl -sS --max-time 3 --noproxy '' "$2" 2>&1; }
# curls AGENT-UID ARGS...: curl as the agent trusting runwarden's CA; body on stdout.
curls() { in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 --noproxy '' --cacert "$RW/certs/ca.pem" "$@" 2>&1; }
# audit_for URL-SUFFIX: the last audit record whose URL ends with it, plus how many (JSON).
audit_for() { node -e '
  const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
  const hit = lines.map((l) => JSON.parse(l)).filter((r) => r.request && String(r.request.url).endsWith(process.argv[2]));
  console.log(JSON.stringify(hit.length ? { ...hit[hit.length - 1], count: hit.length } : null));
' "$AUDIT" "$1"; }

# expect NAME BODY JS-EXPRESSION: the body parses as JSON `r` and the expression is true.
expect() {
  local name=$1 body=$2 expr=$3
  if node -e '
    let r; try { r = JSON.parse(process.argv[1]); } catch { process.exit(1); }
    try { process.exit(Function("r", "return (" + process.argv[2] + ");")(r) ? 0 : 1); }
    catch { process.exit(1); }
  ' "$body" "$expr"; then
    ok "$name"
  else
    not_ok "$name" "expected: $expr" "got: ${body:0:400}"
  fi
}

# count LOG URL: how many requests for URL a server recorded.
count() { grep -c "\"url\":\"$2\"" "$STATE/$1.jsonl" || true; }

expect_count() { # name log url n
  local n
  n=$(count "$2" "$3")
  if [[ $n == "$4" ]]; then ok "$1"; else not_ok "$1" "$2 saw $3 $n times, expected $4"; fi
}

rules() { ip netns exec "$NS_AGENT" iptables -w 5 -t nat -S; }
rules6() { ip netns exec "$NS_AGENT" ip6tables -w 5 -t nat -S; }
init() { ip netns exec "$NS_AGENT" env RUNWARDEN_UID="$RW_UID" \
  RUNWARDEN_TRANSPARENT_PORT="$TRANSPARENT_PORT" RUNWARDEN_EXCLUDE_CIDRS="$EXCLUDE_CIDRS" \
  "$RWNT_REPO/deploy/iptables-init.sh" "$@"; }

# node_get URL: a Node http client with no proxy settings, as the agent; the body on stdout.
node_get() {
  in_agent_as "$AGENT_UID" timeout 5 node -e '
    const http = require("node:http");
    const req = http.get(process.argv[1], { timeout: 3000 }, (res) => {
      let s = ""; res.on("data", (c) => (s += c)); res.on("end", () => console.log(s));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => { console.log(String(e)); process.exit(1); });
  ' "$1" 2>&1
}

# family_checks FAMILY URL-HOST TOOL-ADDR AGENT-ADDR TLS-NAME TLS-ADDR OTHER-URL-HOST
#               LOOP-URL-HOST EXCLUDED-ADDR EXCLUDED-URL-HOST ID
# The interception every address family must pass; hosts as written in a URL ([v6]),
# addresses as a server reports them. ID keeps each family's request paths apart.
family_checks() {
  local fam=$1 host=$2 tool=$3 agent=$4 tls_name=$5 tls_addr=$6 other=$7 loop=$8
  local excl_addr=$9 excl=${10} id=${11} body rec rc n client
  client=$agent:
  [[ $fam == IPv6 ]] && client=[$agent]:

  # 1. Allowed plain HTTP: the agent's call reaches the tool once, through runwarden.
  body=$(curl_as "$AGENT_UID" "http://$host/ok/$id-1") || true
  expect "$fam: agent -> $host:80 allowed call works through the transparent listener" "$body" \
    "r.server === 'tools' && r.url === '/ok/$id-1' && r.local === '$tool:80' && r.remote === '$agent'"
  expect_count "$fam: the tool saw the allowed call exactly once (runwarden's own upstream call is not looped)" \
    tools "/ok/$id-1" 1
  rec=$(audit_for "/ok/$id-1")
  expect "$fam audit: forwarded read_tool with the upstream's 200, URL and client as the agent used them" "$rec" \
    "r.outcome === 'forwarded' && r.action === 'read_tool' && r.class === 'read_only' && r.request.url === 'http://$host/ok/$id-1' && r.client.startsWith('$client') && r.response.status === 200"

  # 2. Denied plain HTTP: 403 from runwarden, never arrives.
  body=$(curl_as "$AGENT_UID" "http://$host/denied/$id-2") || true
  expect "$fam: denied call is refused with denied_by_runbook" "$body" \
    "r.error === 'denied_by_runbook' && r.action === 'forbidden_area'"
  expect_count "$fam: the denied call never reached the tool" tools "/denied/$id-2" 0

  # 3. HTTPS: intercepted with a leaf for the SNI, forwarded over verified TLS.
  body=$(curls "https://$tls_name/ok/$id-3") || true
  expect "$fam: https://$tls_name (SNI) allowed call works, trusting runwarden's CA" "$body" \
    "r.server === 'tools-tls' && r.url === '/ok/$id-3' && r.local === '$tls_addr:443'"
  body=$(curls "https://$tls_name/denied/$id-4") || true
  expect "$fam: denied HTTPS call is refused inside the intercepted TLS" "$body" "r.error === 'denied_by_runbook'"
  expect_count "$fam: the denied HTTPS call never reached the tool" tools-tls "/denied/$id-4" 0

  # 4. SNI / destination mismatch: the name resolves elsewhere -> refused and recorded.
  rc=0
  curls --resolve "$tls_name:443:$other" "https://$tls_name/ok/$id-5" >/dev/null || rc=$?
  rec=$(audit_for "https://$tls_name:443/")
  if [[ $rc != 0 && $(count tools-tls "/ok/$id-5") == 0 ]]; then
    ok "$fam: SNI $tls_name to $other is refused (curl exit $rc), never arrives"
  else
    not_ok "$fam: SNI mismatch is refused" "curl rc=$rc, tools-tls saw $(count tools-tls "/ok/$id-5")"
  fi
  expect "$fam audit: SNI mismatch recorded as refused/destination_mismatch" "$rec" \
    "r.outcome === 'refused' && r.code === 'destination_mismatch' && r.reason.includes('$other:443') && r.client.startsWith('$client')"
  # ... and a plain-HTTP Host naming another address.
  body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 --noproxy '' -H "Host: $other" \
    "http://$host/ok/$id-6" 2>&1) || true
  expect "$fam: Host naming another address is refused (403 destination_mismatch)" "$body" \
    "r.error === 'destination_mismatch' && r.reason.includes('$host:80')"
  expect_count "$fam: the mismatched Host call never reached the tool" tools "/ok/$id-6" 0

  # 5. A Node client with no proxy settings is intercepted the same way.
  body=$(node_get "http://$host/ok/$id-7") || true
  expect "$fam: Node http client -> $host:80 works through runwarden" "$body" \
    "r.server === 'tools' && r.url === '/ok/$id-7' && r.remote === '$agent'"
  expect_count "$fam: and reached the tool once" tools "/ok/$id-7" 1

  # 6. Root in the pod is intercepted too; runwarden's own UID goes straight out.
  body=$(curl_as 0 "http://$host/denied/$id-8") || true
  expect "$fam: uid 0 is intercepted too (denied)" "$body" "r.error === 'denied_by_runbook'"
  body=$(curl_as "$RW_UID" "http://$host/denied/$id-9") || true
  expect "$fam: runwarden's UID -> $host:80 is not redirected" "$body" \
    "r.server === 'tools' && r.url === '/denied/$id-9'"

  # 7. Dialling the transparent listener itself is a loop: refused.
  body=$(curl_as "$AGENT_UID" "http://$loop:$TRANSPARENT_PORT/ok/$id-10") || true
  expect "$fam: a connection whose original destination is runwarden's own listener: loop_refused" "$body" \
    "r.error === 'loop_refused'"

  # 8. A port not in RUNWARDEN_PORTS and the excluded CIDRs are untouched.
  body=$(curl_as "$AGENT_UID" "http://$host:8080/$id-11") || true
  expect "$fam: agent -> $host:8080 (not listed) goes direct" "$body" \
    "r.server === 'tools' && r.local === '$tool:8080' && r.hop === null"
  body=$(curl_as "$AGENT_UID" "http://$excl/$id-12") || true
  expect "$fam: agent -> excluded $excl goes direct" "$body" \
    "r.server === 'tools' && r.local === '$excl_addr:80' && r.url === '/$id-12' && r.hop === null"
  n=$(count tools "/$id-12")
  if [[ $n == 1 ]] && ! grep -q "/$id-12\"" "$AUDIT"; then ok "$fam: the excluded call never went through runwarden"; else
    not_ok "$fam: the excluded call never went through runwarden" "tools saw it $n times; audit: $(grep -c "/$id-12\"" "$AUDIT" || true)"
  fi
}

family_checks IPv4 "$TOOLS4" "$TOOLS4" "$AGENT4" "$API_NAME" "$TOOLS4_TLS" "$TOOLS4_OTHER" 127.0.0.1 \
  "$TOOLS4_EXCLUDED" "$TOOLS4_EXCLUDED" v4
family_checks IPv6 "[$TOOLS6]" "$TOOLS6" "$AGENT6" "$API6_NAME" "$TOOLS6_TLS" "[$TOOLS6_OTHER]" "[::1]" \
  "$TOOLS6_EXCLUDED" "[$TOOLS6_EXCLUDED]" v6

# What only one family has.
body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 --noproxy '' -H "Host: $API_NAME:80" "http://$TOOLS4/ok/t6" 2>&1) || true
expect "plain HTTP Host naming a name that resolves elsewhere is refused (403 destination_mismatch)" "$body" \
  "r.error === 'destination_mismatch'"
expect_count "the mismatched Host name call never reached the tool" tools /ok/t6 0
# A Host name whose lookup hangs (the namespace's name server never answers; the resolver
# would wait 10 s) is refused once limits.upstream_connect_timeout (3 s) is over.
body=$(in_agent_as "$AGENT_UID" timeout 8 curl -sS --max-time 7 --noproxy '' -H "Host: slow-dns.test" "http://$TOOLS4/ok/t9" 2>&1) || true
expect "a Host name whose lookup hangs is refused at upstream_connect_timeout (403 destination_mismatch)" "$body" \
  "r.error === 'destination_mismatch' && /did not resolve within/.test(r.reason)"
expect_count "the hung-lookup call never reached the tool" tools /ok/t9 0
# A burst of calls naming that hung name shares one lookup: while ten of them wait, other
# names still resolve at once (before, they took all eight lookup workers, so this name
# waited its whole 3 s and was refused as "did not resolve").
burst=()
for i in $(seq 1 10); do
  in_agent_as "$AGENT_UID" timeout 8 curl -sS -o /dev/null --max-time 7 --noproxy '' \
    -H "Host: slow-dns.test" "http://$TOOLS4/ok/t9-$i" >/dev/null 2>&1 &
  burst+=($!)
done
sleep 0.5
body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 --noproxy '' -H "Host: $API_NAME:80" "http://$TOOLS4/ok/t9-other" 2>&1) || true
expect "while ten calls wait on the hung name, another name is looked up at once (403 destination_mismatch, resolves elsewhere)" "$body" \
  "r.error === 'destination_mismatch' && /resolves to other addresses/.test(r.reason)"
wait "${burst[@]}" 2>/dev/null || true
expect_count "none of the burst reached the tool" tools /ok/t9- 0
body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 --noproxy '' -H "Host: [FD00:233:100:0:0:0:0:2]" "http://[$TOOLS6]/ok/v3" 2>&1) || true
expect "IPv6: a Host literal spelled differently but naming the destination is accepted" "$body" \
  "r.server === 'tools' && r.url === '/ok/v3'"
body=$(curls -6 "https://$DUAL_NAME/ok/v8") || true
expect "IPv6: $DUAL_NAME (A and AAAA) reached over IPv6 passes the destination check" "$body" \
  "r.server === 'tools-tls' && r.url === '/ok/v8'"
body=$(curl_as "$AGENT_UID" "http://127.0.0.1/t7") || true
expect "agent -> 127.0.0.1:80 stays on loopback" "$body" "r.server === 'agent-local' && r.local === '127.0.0.1:80'"
body=$(curl_as "$AGENT_UID" "http://$AGENT4/t8") || true
expect "agent -> its own address :80 (via lo) is untouched" "$body" "r.server === 'agent-local' && r.local === '$AGENT4:80'"
body=$(curl_as "$AGENT_UID" "http://[::1]/t9") || true
expect "agent -> [::1]:80 stays on loopback" "$body" "r.server === 'agent-local' && r.local === '::1:80'"

# 9. Audit records match across modes and families: the same call through listen.proxy,
# and the IPv6 record against the IPv4 one.
body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 -x "http://127.0.0.1:$PROXY_PORT" \
  "http://$TOOLS4/ok/t11" 2>&1) || true
expect "the same call through the explicit proxy works" "$body" "r.server === 'tools' && r.url === '/ok/t11'"
a=$(audit_for "/ok/v4-1")
b=$(audit_for "/ok/t11")
c=$(audit_for "/ok/v6-1")
if node -e '
  const [a, b, c] = process.argv.slice(1).map((s) => JSON.parse(s));
  const keys = (o) => Object.keys(o).filter((k) => !["count"].includes(k)).sort().join(",");
  const same = (x, y) => ["agent", "runbook", "runbook_sha256", "action", "class", "outcome", "code"].every((k) => x[k] === y[k]) &&
    keys(x) === keys(y) && keys(x.request) === keys(y.request) && keys(x.response) === keys(y.response) &&
    x.response.status === y.response.status && x.count === y.count;
  const urls = a.request.url.replace("/ok/v4-1", "") === b.request.url.replace("/ok/t11", "");
  process.exit(same(a, b) && urls && same(a, c) ? 0 : 1);
' "$a" "$b" "$c"; then ok "audit records of transparent (IPv4, IPv6) and explicit mode have the same fields and decision"; else
  not_ok "audit records match across modes and families" "IPv4: ${a:0:600}" "explicit: ${b:0:600}" "IPv6: ${c:0:600}"
fi

if in_agent_as "$RW_UID" "$BIN" audit verify "$AUDIT" >"$STATE/verify.txt" 2>&1; then ok "runwarden audit verify passes on the netns audit log"; else
  not_ok "runwarden audit verify passes" "$(cat "$STATE/verify.txt")"
fi

# 10. Idempotent: a second run leaves the same rules and one jump, for both families.
before=$(rules)
before6=$(rules6)
init 2>/dev/null
after=$(rules)
after6=$(rules6)
jumps=$(grep -c -- '-A OUTPUT -p tcp -j RUNWARDEN_OUTPUT' <<<"$after" || true)
jumps6=$(grep -c -- '-A OUTPUT -p tcp -j RUNWARDEN_OUTPUT' <<<"$after6" || true)
if [[ $before == "$after" && $jumps == 1 ]]; then ok "re-running the init script changes nothing (1 jump)"; else
  not_ok "re-running the init script changes nothing" "jumps=$jumps" "before: $before" "after: $after"
fi
if [[ $before6 == "$after6" && $jumps6 == 1 ]] &&
  grep -q -- "-A RUNWARDEN_OUTPUT -d $EXCLUDE6 -j RETURN" <<<"$after6" &&
  grep -q -- "-A RUNWARDEN_OUTPUT -m owner --uid-owner $RW_UID -j RETURN" <<<"$after6" &&
  grep -q -- "--to-ports $TRANSPARENT_PORT" <<<"$after6"; then
  ok "ip6tables: the same chain (loopback, UID, $EXCLUDE6 exempt; REDIRECT), re-run changes nothing"
else not_ok "ip6tables chain is complete and idempotent" "jumps=$jumps6" "before: $before6" "after: $after6"; fi

# 11. --dry-run and invalid input change nothing.
init --dry-run >"$STATE/dry-run.txt" 2>&1
if [[ $(rules) == "$before" && $(rules6) == "$before6" ]] && grep -q -- "--to-ports $TRANSPARENT_PORT" "$STATE/dry-run.txt" &&
  grep -q -- "^ip6tables .*-d $EXCLUDE6 -j RETURN" "$STATE/dry-run.txt"; then
  ok "--dry-run prints the REDIRECT and changes nothing"
else not_ok "--dry-run prints the REDIRECT and changes nothing" "$(cat "$STATE/dry-run.txt")"; fi
rc=0
ip netns exec "$NS_AGENT" env RUNWARDEN_PORTS=80,http "$RWNT_REPO/deploy/iptables-init.sh" 2>/dev/null || rc=$?
if [[ $rc == 2 && $(rules) == "$before" ]]; then ok "invalid RUNWARDEN_PORTS fails (exit 2) and changes nothing"; else
  not_ok "invalid RUNWARDEN_PORTS fails (exit 2) and changes nothing" "rc=$rc"
fi

rc=0
ip netns exec "$NS_AGENT" env RUNWARDEN_UID="$RW_UID" RUNWARDEN_IPV6=auto RUNWARDEN_IP6TABLES=/nonexistent/ip6tables \
  "$RWNT_REPO/deploy/iptables-init.sh" 2>"$STATE/no-ip6tables.txt" || rc=$?
if [[ $rc == 2 && $(rules) == "$before" && $(rules6) == "$before6" ]] && grep -q "global IPv6 address" "$STATE/no-ip6tables.txt"; then
  ok "RUNWARDEN_IPV6=auto with a global IPv6 address but no usable ip6tables fails (exit 2), changes nothing"
else not_ok "auto without ip6tables but with IPv6 fails closed" "rc=$rc" "$(cat "$STATE/no-ip6tables.txt")"; fi

# 12. Fail closed: with the listener down, redirected calls fail; they never reach the tool.
stop_runwarden
rc=0
curl_as "$AGENT_UID" "http://$TOOLS4/t12" >/dev/null || rc=$?
if [[ $rc != 0 && $(count tools /t12) == 0 ]]; then ok "listener down: the call fails (curl exit $rc) and never reaches the tool"; else
  not_ok "listener down: the call fails and never reaches the tool" "curl rc=$rc, tools saw $(count tools /t12)"
fi
rc=0
curl_as "$AGENT_UID" "http://[$TOOLS6]/t12v6" >/dev/null || rc=$?
if [[ $rc != 0 && $(count tools /t12v6) == 0 ]]; then ok "IPv6: listener down: the call fails (curl exit $rc) and never reaches the tool"; else
  not_ok "IPv6: listener down: the call fails and never reaches the tool" "curl rc=$rc, tools saw $(count tools /t12v6)"
fi

# 12b. One dual-stack listener (transparent: "[::]:port", IPV6_V6ONLY off) serves both
# families: IPv4 arrives v4-mapped, its original destination and audit client stay IPv4.
start_runwarden "$RW/runwarden-dual.yaml"
body=$(curl_as "$AGENT_UID" "http://$TOOLS4/ok/d1") || true
expect "dual-stack [::]: IPv4 agent call works" "$body" "r.server === 'tools' && r.url === '/ok/d1' && r.local === '$TOOLS4:80'"
rec=$(audit_for "/ok/d1")
expect "dual-stack audit: IPv4 URL and unmapped IPv4 client" "$rec" \
  "r.outcome === 'forwarded' && r.request.url === 'http://$TOOLS4/ok/d1' && r.client.startsWith('$AGENT4:')"
body=$(curls "https://$API_NAME/ok/d2") || true
expect "dual-stack [::]: IPv4 HTTPS (SNI checked against the v4 original destination) works" "$body" \
  "r.server === 'tools-tls' && r.url === '/ok/d2' && r.local === '$TOOLS4_TLS:443'"
body=$(curl_as "$AGENT_UID" "http://[$TOOLS6]/ok/d3") || true
expect "dual-stack [::]: IPv6 agent call works" "$body" "r.server === 'tools' && r.url === '/ok/d3' && r.local === '$TOOLS6:80'"
body=$(curl_as "$AGENT_UID" "http://[$TOOLS6]/denied/d4") || true
expect "dual-stack [::]: IPv6 denied call refused" "$body" "r.error === 'denied_by_runbook'"
expect_count "dual-stack [::]: the denied call never reached the tool" tools /denied/d4 0
body=$(curl_as "$AGENT_UID" "http://127.0.0.1:$TRANSPARENT_PORT/ok/d5") || true
expect "dual-stack [::]: dialling 127.0.0.1:$TRANSPARENT_PORT (v4-mapped) is loop_refused" "$body" "r.error === 'loop_refused'"
stop_runwarden

# 13. --remove restores direct traffic, and is itself idempotent.
init --remove 2>/dev/null
rc=0
init --remove 2>/dev/null || rc=$?
if ! rules | grep -q RUNWARDEN_OUTPUT && ! rules6 | grep -q RUNWARDEN_OUTPUT && [[ $rc == 0 ]]; then
  ok "--remove deletes chain and jump, IPv4 and IPv6 (twice: exit 0)"
else
  not_ok "--remove deletes chain and jump" "rc=$rc" "$(rules)" "$(rules6)"
fi
body=$(curl_as "$AGENT_UID" "http://$TOOLS4/t13") || true
expect "after --remove, agent -> tools:80 goes direct" "$body" "r.server === 'tools' && r.hop === null && r.remote === '$AGENT4'"
body=$(curl_as "$AGENT_UID" "http://[$TOOLS6]/t13v6") || true
expect "after --remove, agent -> [$TOOLS6]:80 goes direct" "$body" "r.server === 'tools' && r.url === '/t13v6' && r.remote === '$AGENT6'"

elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
echo "netns transparent mode with runwarden: ${elapsed}s"
echo "$passed passed, $failed failed"
((failed == 0))
