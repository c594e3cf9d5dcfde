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

# 1. Allowed plain HTTP: the agent's call reaches the tool once, through runwarden.
body=$(curl_as "$AGENT_UID" "http://$TOOLS4/ok/t1") || true
expect "agent -> tools:80 allowed call works through the transparent listener" "$body" \
  "r.server === 'tools' && r.url === '/ok/t1' && r.local === '$TOOLS4:80' && r.remote === '$AGENT4'"
expect_count "the tool saw the allowed call exactly once (runwarden's own upstream call is not looped)" tools /ok/t1 1
rec=$(audit_for "/ok/t1")
expect "audit: forwarded read_tool with the upstream's 200" "$rec" \
  "r.outcome === 'forwarded' && r.action === 'read_tool' && r.class === 'read_only' && r.request.url === 'http://$TOOLS4/ok/t1' && r.response.status === 200"

# 2. Denied plain HTTP: 403 from runwarden, never arrives.
body=$(curl_as "$AGENT_UID" "http://$TOOLS4/denied/t2") || true
expect "denied call is refused with denied_by_runbook" "$body" \
  "r.error === 'denied_by_runbook' && r.action === 'forbidden_area'"
expect_count "the denied call never reached the tool" tools /denied/t2 0

# 3. HTTPS: intercepted with a leaf for the SNI, forwarded over verified TLS.
body=$(curls "https://$API_NAME/ok/t3") || true
expect "agent -> https://$API_NAME (SNI) allowed call works, trusting runwarden's CA" "$body" \
  "r.server === 'tools-tls' && r.url === '/ok/t3' && r.local === '$TOOLS4_TLS:443'"
body=$(curls "https://$API_NAME/denied/t4") || true
expect "denied HTTPS call is refused inside the intercepted TLS" "$body" "r.error === 'denied_by_runbook'"
expect_count "the denied HTTPS call never reached the tool" tools-tls /denied/t4 0

# 4. SNI / destination mismatch: the name resolves elsewhere -> refused and recorded.
rc=0
curls --resolve "$API_NAME:443:$TOOLS4_OTHER" "https://$API_NAME/ok/t5" >/dev/null || rc=$?
rec=$(audit_for "https://$API_NAME:443/")
if [[ $rc != 0 && $(count tools-tls /ok/t5) == 0 ]]; then ok "SNI $API_NAME to $TOOLS4_OTHER is refused (curl exit $rc), never arrives"; else
  not_ok "SNI mismatch is refused" "curl rc=$rc, tools-tls saw $(count tools-tls /ok/t5)"
fi
expect "audit: SNI mismatch recorded as refused/destination_mismatch" "$rec" \
  "r.outcome === 'refused' && r.code === 'destination_mismatch' && r.reason.includes('$TOOLS4_OTHER')"
body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 --noproxy '' -H "Host: $API_NAME:80" "http://$TOOLS4/ok/t6" 2>&1) || true
expect "plain HTTP Host naming another address is refused (403 destination_mismatch)" "$body" \
  "r.error === 'destination_mismatch'"
expect_count "the mismatched Host call never reached the tool" tools /ok/t6 0

# 5. A Node client with no proxy settings is intercepted the same way.
body=$(in_agent_as "$AGENT_UID" timeout 5 node -e '
  const http = require("node:http");
  const req = http.get(process.argv[1], { timeout: 3000 }, (res) => {
    let s = ""; res.on("data", (c) => (s += c)); res.on("end", () => console.log(s));
  });
  req.on("timeout", () => req.destroy(new Error("timeout")));
  req.on("error", (e) => { console.log(String(e)); process.exit(1); });
' "http://$TOOLS4/ok/t7" 2>&1) || true
expect "Node http client -> tools:80 works through runwarden" "$body" "r.server === 'tools' && r.url === '/ok/t7'"
expect_count "and reached the tool once" tools /ok/t7 1

# 6. Root in the pod is intercepted too; runwarden's own UID goes straight out.
body=$(curl_as 0 "http://$TOOLS4/denied/t8") || true
expect "uid 0 is intercepted too (denied)" "$body" "r.error === 'denied_by_runbook'"
body=$(curl_as "$RW_UID" "http://$TOOLS4/denied/t9") || true
expect "runwarden's UID -> tools:80 is not redirected" "$body" "r.server === 'tools' && r.url === '/denied/t9'"

# 7. Dialling the transparent listener itself is a loop: refused.
body=$(curl_as "$AGENT_UID" "http://127.0.0.1:$TRANSPARENT_PORT/ok/t10") || true
expect "a connection whose original destination is runwarden's own listener: loop_refused" "$body" \
  "r.error === 'loop_refused'"

# 8. Audit records match explicit-proxy mode: the same call through listen.proxy.
body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 -x "http://127.0.0.1:$PROXY_PORT" \
  "http://$TOOLS4/ok/t11" 2>&1) || true
expect "the same call through the explicit proxy works" "$body" "r.server === 'tools' && r.url === '/ok/t11'"
a=$(audit_for "/ok/t1")
b=$(audit_for "/ok/t11")
if node -e '
  const [a, b] = process.argv.slice(1).map((s) => JSON.parse(s));
  const keys = (o) => Object.keys(o).filter((k) => !["count"].includes(k)).sort().join(",");
  const same = ["agent", "runbook", "runbook_sha256", "action", "class", "outcome", "code"].every((k) => a[k] === b[k]);
  const shape = keys(a) === keys(b) && keys(a.request) === keys(b.request) && keys(a.response) === keys(b.response);
  const urls = a.request.url.replace("/ok/t1", "") === b.request.url.replace("/ok/t11", "");
  process.exit(same && shape && urls && a.response.status === b.response.status && a.count === b.count ? 0 : 1);
' "$a" "$b"; then ok "audit records of transparent and explicit mode have the same fields and decision"; else
  not_ok "audit records match explicit-proxy mode" "transparent: ${a:0:600}" "explicit: ${b:0:600}"
fi

# 9. IPv6: the same interception over ip6tables REDIRECT to the [::1] listener.
body=$(curl_as "$AGENT_UID" "http://[$TOOLS6]/ok/v1") || true
expect "IPv6: agent -> [$TOOLS6]:80 allowed call works through the transparent listener" "$body" \
  "r.server === 'tools' && r.url === '/ok/v1' && r.local === '$TOOLS6:80' && r.remote === '$AGENT6'"
expect_count "IPv6: the tool saw the allowed call exactly once" tools /ok/v1 1
rec=$(audit_for "/ok/v1")
expect "IPv6 audit: forwarded read_tool, bracketed URL and client" "$rec" \
  "r.outcome === 'forwarded' && r.action === 'read_tool' && r.request.url === 'http://[$TOOLS6]/ok/v1' && r.client.startsWith('[$AGENT6]:') && r.response.status === 200"
a=$(audit_for "/ok/t1")
if node -e '
  const [a, b] = process.argv.slice(1).map((s) => JSON.parse(s));
  const keys = (o) => Object.keys(o).sort().join(",");
  const same = ["agent", "runbook", "runbook_sha256", "action", "class", "outcome", "code"].every((k) => a[k] === b[k]);
  process.exit(same && keys(a) === keys(b) && keys(a.request) === keys(b.request) && keys(a.response) === keys(b.response) ? 0 : 1);
' "$a" "$rec"; then ok "IPv6 and IPv4 transparent audit records have the same fields and decision"; else
  not_ok "IPv6 and IPv4 transparent audit records match" "IPv4: ${a:0:600}" "IPv6: ${rec:0:600}"
fi
body=$(curl_as "$AGENT_UID" "http://[$TOOLS6]/denied/v2") || true
expect "IPv6: denied call is refused with denied_by_runbook" "$body" \
  "r.error === 'denied_by_runbook' && r.action === 'forbidden_area'"
expect_count "IPv6: the denied call never reached the tool" tools /denied/v2 0
body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 --noproxy '' -H "Host: [FD00:233:100:0:0:0:0:2]" "http://[$TOOLS6]/ok/v3" 2>&1) || true
expect "IPv6: a Host literal spelled differently but naming the destination is accepted" "$body" \
  "r.server === 'tools' && r.url === '/ok/v3'"
body=$(in_agent_as "$AGENT_UID" timeout 5 curl -sS --max-time 3 --noproxy '' -H "Host: [$TOOLS6_OTHER]" "http://[$TOOLS6]/ok/v4" 2>&1) || true
expect "IPv6: Host naming another IPv6 address is refused (403 destination_mismatch)" "$body" \
  "r.error === 'destination_mismatch' && r.reason.includes('[$TOOLS6]:80')"
expect_count "IPv6: the mismatched Host call never reached the tool" tools /ok/v4 0
body=$(curls "https://$API6_NAME/ok/v5") || true
expect "IPv6: https://$API6_NAME (AAAA only) allowed call works, SNI checked against the AAAA" "$body" \
  "r.server === 'tools-tls' && r.url === '/ok/v5' && r.local === '$TOOLS6_TLS:443'"
body=$(curls "https://$API6_NAME/denied/v6") || true
expect "IPv6: denied HTTPS call is refused inside the intercepted TLS" "$body" "r.error === 'denied_by_runbook'"
expect_count "IPv6: the denied HTTPS call never reached the tool" tools-tls /denied/v6 0
rc=0
curls --resolve "$API6_NAME:443:[$TOOLS6_OTHER]" "https://$API6_NAME/ok/v7" >/dev/null || rc=$?
rec=$(audit_for "https://$API6_NAME:443/")
if [[ $rc != 0 && $(count tools-tls /ok/v7) == 0 ]]; then ok "IPv6: SNI $API6_NAME to [$TOOLS6_OTHER] is refused (curl exit $rc), never arrives"; else
  not_ok "IPv6: SNI mismatch is refused" "curl rc=$rc, tools-tls saw $(count tools-tls /ok/v7)"
fi
expect "IPv6 audit: SNI mismatch recorded as refused/destination_mismatch" "$rec" \
  "r.outcome === 'refused' && r.code === 'destination_mismatch' && r.reason.includes('[$TOOLS6_OTHER]:443') && r.client.startsWith('[$AGENT6]:')"
body=$(curls -6 "https://$DUAL_NAME/ok/v8") || true
expect "IPv6: $DUAL_NAME (A and AAAA) reached over IPv6 passes the destination check" "$body" \
  "r.server === 'tools-tls' && r.url === '/ok/v8'"
body=$(in_agent_as "$AGENT_UID" timeout 5 node -e '
  const http = require("node:http");
  const req = http.get(process.argv[1], { timeout: 3000 }, (res) => {
    let s = ""; res.on("data", (c) => (s += c)); res.on("end", () => console.log(s));
  });
  req.on("timeout", () => req.destroy(new Error("timeout")));
  req.on("error", (e) => { console.log(String(e)); process.exit(1); });
' "http://[$TOOLS6]/ok/v9" 2>&1) || true
expect "IPv6: Node http client -> [$TOOLS6]:80 works through runwarden" "$body" \
  "r.server === 'tools' && r.url === '/ok/v9' && r.remote === '$AGENT6'"
body=$(curl_as 0 "http://[$TOOLS6]/denied/v10") || true
expect "IPv6: uid 0 is intercepted too (denied)" "$body" "r.error === 'denied_by_runbook'"
body=$(curl_as "$RW_UID" "http://[$TOOLS6]/denied/v11") || true
expect "IPv6: runwarden's UID -> [$TOOLS6]:80 is not redirected" "$body" "r.server === 'tools' && r.url === '/denied/v11'"
body=$(curl_as "$AGENT_UID" "http://[::1]:$TRANSPARENT_PORT/ok/v12") || true
expect "IPv6: dialling [::1]:$TRANSPARENT_PORT itself is loop_refused" "$body" "r.error === 'loop_refused'"
body=$(curl_as "$AGENT_UID" "http://[$TOOLS6]:8080/v13") || true
expect "IPv6: agent -> [$TOOLS6]:8080 (not listed) goes direct" "$body" "r.server === 'tools' && r.local === '$TOOLS6:8080'"
body=$(curl_as "$AGENT_UID" "http://[$TOOLS6_EXCLUDED]/v14") || true
expect "IPv6: agent -> excluded CIDR $EXCLUDE6 goes direct" "$body" "r.server === 'tools' && r.local === '$TOOLS6_EXCLUDED:80' && r.url === '/v14'"
n=$(grep -c '"url":"/v14"' "$STATE/tools.jsonl" || true)
if [[ $n == 1 ]] && ! grep -q '/v14' "$AUDIT"; then ok "IPv6: the excluded call never went through runwarden"; else
  not_ok "IPv6: the excluded call never went through runwarden" "tools saw it $n times; audit: $(grep -c /v14 "$AUDIT" || true)"
fi

if in_agent_as "$RW_UID" "$BIN" audit verify "$AUDIT" >"$STATE/verify.txt" 2>&1; then ok "runwarden audit verify passes on the netns audit log"; else
  not_ok "runwarden audit verify passes" "$(cat "$STATE/verify.txt")"
fi

# 6. A port not in RUNWARDEN_PORTS is untouched.
body=$(curl_as "$AGENT_UID" "http://$TOOLS4:8080/t6") || true
expect "agent -> tools:8080 (not listed) goes direct" "$body" "r.server === 'tools' && r.local === '$TOOLS4:8080' && r.hop === null"

# 7. Loopback and the pod's own address are untouched.
body=$(curl_as "$AGENT_UID" "http://127.0.0.1/t7") || true
expect "agent -> 127.0.0.1:80 stays on loopback" "$body" "r.server === 'agent-local' && r.local === '127.0.0.1:80'"
body=$(curl_as "$AGENT_UID" "http://$AGENT4/t8") || true
expect "agent -> its own address :80 (via lo) is untouched" "$body" "r.server === 'agent-local' && r.local === '$AGENT4:80'"
body=$(curl_as "$AGENT_UID" "http://[::1]/t9") || true
expect "agent -> [::1]:80 stays on loopback" "$body" "r.server === 'agent-local' && r.local === '::1:80'"

# 8. Excluded CIDRs are untouched.
body=$(curl_as "$AGENT_UID" "http://$TOOLS4_EXCLUDED/t10") || true
expect "agent -> excluded CIDR $EXCLUDE4 goes direct" "$body" "r.server === 'tools' && r.local === '$TOOLS4_EXCLUDED:80' && r.hop === null"

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
