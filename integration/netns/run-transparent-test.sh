#!/usr/bin/env bash
# End-to-end check of the transparent-mode plumbing: the REAL deploy/iptables-init.sh in a
# namespace that stands for the pod, real upstreams in another. Run as root:
#   sudo integration/netns/run-transparent-test.sh
# Exits non-zero on any failure; always tears down (trap).
#
# Until runwarden's transparent listener exists, a stand-in (recorder.mjs stub, running as
# runwarden's UID) listens on the transparent port; it records every connection and makes its
# own upstream connection by Host header. What is proven here is everything that does not
# depend on SO_ORIGINAL_DST: which traffic reaches the listener and which does not.
set -euo pipefail
export RWNT_ID=${RWNT_ID:-$(printf '%x' $$)}
# shellcheck source=integration/netns/common.sh
source "$(dirname "$0")/common.sh"
[[ $(id -u) == 0 ]] || rwnt_die "needs root: sudo $0"
start=$(date +%s.%N)

cleanup() {
  local rc=$?
  "$RWNT_DIR/teardown.sh" || rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$RWNT_DIR/setup.sh"

v6=0
ip netns exec "$NS_AGENT" ip6tables -w 5 -t nat -S RUNWARDEN_OUTPUT >/dev/null 2>&1 && v6=1
listen=("127.0.0.1:$TRANSPARENT_PORT")
((v6)) && listen+=("[::1]:$TRANSPARENT_PORT")
start_recorder "$NS_AGENT" "$RW_UID" stub stub "${listen[@]}"

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
init() { ip netns exec "$NS_AGENT" env RUNWARDEN_UID="$RW_UID" \
  RUNWARDEN_TRANSPARENT_PORT="$TRANSPARENT_PORT" RUNWARDEN_EXCLUDE_CIDRS="$EXCLUDE_CIDRS" \
  "$RWNT_REPO/deploy/iptables-init.sh" "$@"; }

# 1. The agent's plain call to a tool on port 80 lands on the listener, not on the tool.
body=$(curl_as "$AGENT_UID" "http://$TOOLS4/t1") || true
expect "agent -> tools:80 is redirected to the transparent listener" "$body" \
  "r.via === 'stub' && r.stub.local === '127.0.0.1:$TRANSPARENT_PORT' && r.stub.remote === '$AGENT4' && r.stub.host === '$TOOLS4'"
expect "the listener runs as runwarden's UID $RW_UID and its own upstream call is not redirected" "$body" \
  "r.stub.uid === $RW_UID && r.upstream.server === 'tools' && r.upstream.local === '$TOOLS4:80' && r.upstream.remote === '$AGENT4' && r.upstream.hop === 'stub'"
expect_count "the tool saw the call once, only through the listener (no direct arrival)" tools /t1 1
expect_count "the listener saw the call once (no loop back to itself)" stub /t1 1

# 2. Port 443 too (plain HTTP on 443 is enough to prove the redirect).
body=$(curl_as "$AGENT_UID" "http://$TOOLS4:443/t2") || true
expect "agent -> tools:443 is redirected" "$body" \
  "r.via === 'stub' && r.stub.host === '$TOOLS4:443' && r.upstream.local === '$TOOLS4:443'"

# 3. A Node client with no proxy settings is intercepted the same way.
body=$(in_agent_as "$AGENT_UID" timeout 5 node -e '
  const http = require("node:http");
  const req = http.get(process.argv[1], { timeout: 3000 }, (res) => {
    let s = ""; res.on("data", (c) => (s += c)); res.on("end", () => console.log(s));
  });
  req.on("timeout", () => req.destroy(new Error("timeout")));
  req.on("error", (e) => { console.log(String(e)); process.exit(1); });
' "http://$TOOLS4/t3" 2>&1) || true
expect "Node http client -> tools:80 is redirected" "$body" "r.via === 'stub' && r.upstream.url === '/t3'"

# 4. Root in the pod is not exempt either: only runwarden's UID is.
body=$(curl_as 0 "http://$TOOLS4/t4") || true
expect "uid 0 -> tools:80 is redirected too" "$body" "r.via === 'stub'"

# 5. runwarden's UID goes straight out.
body=$(curl_as "$RW_UID" "http://$TOOLS4/t5") || true
expect "runwarden's UID -> tools:80 goes direct" "$body" "r.server === 'tools' && r.hop === null && r.remote === '$AGENT4'"
expect_count "the listener never saw runwarden's own call" stub /t5 0

# 6. A port not in RUNWARDEN_PORTS is untouched.
body=$(curl_as "$AGENT_UID" "http://$TOOLS4:8080/t6") || true
expect "agent -> tools:8080 (not listed) goes direct" "$body" "r.server === 'tools' && r.local === '$TOOLS4:8080' && r.hop === null"
expect_count "the listener never saw the unlisted port" stub /t6 0

# 7. Loopback and the pod's own address are untouched.
body=$(curl_as "$AGENT_UID" "http://127.0.0.1/t7") || true
expect "agent -> 127.0.0.1:80 stays on loopback" "$body" "r.server === 'agent-local' && r.local === '127.0.0.1:80'"
body=$(curl_as "$AGENT_UID" "http://$AGENT4/t8") || true
expect "agent -> its own address :80 (via lo) is untouched" "$body" "r.server === 'agent-local' && r.local === '$AGENT4:80'"
body=$(curl_as "$AGENT_UID" "http://[::1]/t9") || true
expect "agent -> [::1]:80 stays on loopback" "$body" "r.server === 'agent-local' && r.local === '::1:80'"
expect_count "the listener never saw loopback calls" stub /t7 0

# 8. Excluded CIDRs are untouched.
body=$(curl_as "$AGENT_UID" "http://$TOOLS4_EXCLUDED/t10") || true
expect "agent -> excluded CIDR $EXCLUDE_CIDRS goes direct" "$body" "r.server === 'tools' && r.local === '$TOOLS4_EXCLUDED:80' && r.hop === null"

# 9. IPv6, when ip6tables nat works here.
if ((v6)); then
  body=$(curl_as "$AGENT_UID" "http://[$TOOLS6]/t11") || true
  expect "agent -> [tools6]:80 is redirected to [::1]:$TRANSPARENT_PORT" "$body" \
    "r.via === 'stub' && r.stub.local === '::1:$TRANSPARENT_PORT' && r.upstream.local === '$TOOLS6:80'"
else
  not_ok "IPv6: ip6tables nat is not usable in the agent namespace" "see $STATE/iptables-init.log"
fi

# 10. Idempotent: a second run leaves the same rules and one jump.
before=$(rules)
init 2>/dev/null
after=$(rules)
jumps=$(grep -c -- '-A OUTPUT -p tcp -j RUNWARDEN_OUTPUT' <<<"$after" || true)
if [[ $before == "$after" && $jumps == 1 ]]; then ok "re-running the init script changes nothing (1 jump)"; else
  not_ok "re-running the init script changes nothing" "jumps=$jumps" "before: $before" "after: $after"
fi

# 11. --dry-run and invalid input change nothing.
init --dry-run >"$STATE/dry-run.txt" 2>&1
if [[ $(rules) == "$before" ]] && grep -q -- "--to-ports $TRANSPARENT_PORT" "$STATE/dry-run.txt"; then
  ok "--dry-run prints the REDIRECT and changes nothing"
else not_ok "--dry-run prints the REDIRECT and changes nothing" "$(cat "$STATE/dry-run.txt")"; fi
rc=0
ip netns exec "$NS_AGENT" env RUNWARDEN_PORTS=80,http "$RWNT_REPO/deploy/iptables-init.sh" 2>/dev/null || rc=$?
if [[ $rc == 2 && $(rules) == "$before" ]]; then ok "invalid RUNWARDEN_PORTS fails (exit 2) and changes nothing"; else
  not_ok "invalid RUNWARDEN_PORTS fails (exit 2) and changes nothing" "rc=$rc"
fi

# 12. Fail closed: with the listener down, redirected calls fail; they never reach the tool.
kill "$(cat "$STATE/stub.pid")"
for ((i = 0; i < 30; i++)); do kill -0 "$(cat "$STATE/stub.pid")" 2>/dev/null || break; sleep 0.1; done
rc=0
curl_as "$AGENT_UID" "http://$TOOLS4/t12" >/dev/null || rc=$?
if [[ $rc != 0 && $(count tools /t12) == 0 ]]; then ok "listener down: the call fails (curl exit $rc) and never reaches the tool"; else
  not_ok "listener down: the call fails and never reaches the tool" "curl rc=$rc, tools saw $(count tools /t12)"
fi

# 13. --remove restores direct traffic, and is itself idempotent.
init --remove 2>/dev/null
rc=0
init --remove 2>/dev/null || rc=$?
if ! rules | grep -q RUNWARDEN_OUTPUT && [[ $rc == 0 ]]; then ok "--remove deletes chain and jump (twice: exit 0)"; else
  not_ok "--remove deletes chain and jump" "rc=$rc" "$(rules)"
fi
body=$(curl_as "$AGENT_UID" "http://$TOOLS4/t13") || true
expect "after --remove, agent -> tools:80 goes direct" "$body" "r.server === 'tools' && r.hop === null && r.remote === '$AGENT4'"

elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
echo "netns transparent plumbing: ${elapsed}s (ipv6=$v6)"
echo "$passed passed, $failed failed"
((failed == 0))
