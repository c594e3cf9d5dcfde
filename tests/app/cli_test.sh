#!/usr/bin/env bash
# The runwarden CLI as a user meets it: every command answers --help, `check` accepts the
# bundled example and rejects a broken one with file:line:col, `explain` decides without
# sending anything, `ca init` makes a CA and refuses to overwrite it.
set -uo pipefail
bin=$(readlink -f "$1")
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
expect_exit() { # expected-code description command...
  local want=$1 what=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" -eq "$want" ]; then ok; else bad "$what: exit $got, want $want"; sed 's/^/  /' "$tmp/err" | head -5; fi
}
expect_in() { # file pattern description
  if grep -qE -- "$2" "$1"; then ok; else bad "$3: /$2/ not in output"; sed 's/^/  /' "$1" | head -8; fi
}

for cmd in check explain serve "ca init" "audit verify" "audit query" "audit blast-radius" \
  "approvals list" "approvals approve" "ctl mode" "ctl status"; do
  # shellcheck disable=SC2086
  expect_exit 0 "$cmd --help" "$bin" $cmd --help
  expect_in "$tmp/out" "Usage|usage" "$cmd --help prints usage"
done

expect_exit 0 "check on the example" "$bin" check -c "$src/examples/runwarden.yaml"
expect_in "$tmp/out" "^ok: [0-9]+ actions, [0-9]+ runbooks, active demo" "check summary"
# Usage errors exit 2, not CLI11's own codes (105, 106, ...).
expect_exit 2 "approve without an id" "$bin" approvals approve
expect_exit 2 "audit verify without a path" "$bin" audit verify
expect_exit 2 "an unknown option" "$bin" check --no-such-option
# listen.admin on the proxy's endpoint: an error at check, not a bind failure at serve.
mkdir -p "$tmp/exl" && cp -r "$src/examples/." "$tmp/exl/"
sed -i 's/^\(  admin: \).*/\1127.0.0.1:15001/' "$tmp/exl/runwarden.yaml"
expect_exit 1 "check with admin on the proxy's endpoint" "$bin" check -c "$tmp/exl/runwarden.yaml"
expect_in "$tmp/err" "listen.admin: 127.0.0.1:15001 overlaps listen.proxy" "admin overlap named"

# A broken copy of the example: a typo'd key and an unknown action, both reported with positions.
cp -r "$src/examples" "$tmp/ex"
sed -i 's/^active_runbook:/active_runbok:/' "$tmp/ex/runwarden.yaml"
sed -i 's/- demo_delete_anything /- no_such_action /' "$tmp/ex/runbooks/demo.yaml"
expect_exit 1 "check on a broken config" "$bin" check -c "$tmp/ex/runwarden.yaml"
expect_in "$tmp/err" "runwarden.yaml:[0-9]+:[0-9]+: .*active_runbok" "unknown key with file:line:col"
expect_in "$tmp/err" "demo.yaml:[0-9]+:[0-9]+: .*no_such_action" "unknown action with file:line:col"

# --strict: a clean example passes; a diagnostics action that can POST warns, and fails the
# check only under --strict (exit 3).
expect_exit 0 "check --strict on the example" "$bin" check --strict -c "$src/examples/runwarden.yaml"
cp -r "$src/examples" "$tmp/ex2"
sed -i '0,/^allowed_actions:/s//diagnostics: [open_incident_summary]\nallowed_actions:/' "$tmp/ex2/runbooks/demo.yaml"
grep -q "^diagnostics: \[open_incident_summary\]" "$tmp/ex2/runbooks/demo.yaml" && ok || bad "test setup: diagnostics line not added"
expect_exit 0 "check with a warning" "$bin" check -c "$tmp/ex2/runwarden.yaml"
expect_in "$tmp/err" "warning: .*open_incident_summary" "the warning names the action"
expect_in "$tmp/out" "^ok: .*, 1 warning" "the ok line counts the warning"
expect_exit 3 "check --strict with a warning" "$bin" check --strict -c "$tmp/ex2/runwarden.yaml"

# Approvers nobody can act as: what serve warns about at start-up, check warns about too.
expect_exit 0 "check --strict on the example, no warnings" "$bin" check --strict -c "$src/examples/runwarden.yaml"
if grep -q "warning" "$tmp/err"; then bad "the example has warnings"; sed 's/^/  /' "$tmp/err" | head -3; else ok; fi
cp -r "$src/examples" "$tmp/ex3"
sed -i -E 's/^(alice [0-9a-f]{64}) .*/\1 support-team-leads/' "$tmp/ex3/operators.txt" # alice loses 3 groups
expect_exit 0 "check with unreachable approvers" "$bin" check -c "$tmp/ex3/runwarden.yaml"
expect_in "$tmp/err" "payment-api-latency.yaml:[0-9]+:[0-9]+: approvers: warning: approver_unknown: \"payments-on-call\"" "approver_unknown with the runbook's file:line"
expect_in "$tmp/err" "mcp-operations.yaml:[0-9]+:[0-9]+: approvers: warning: approvers_unreachable: .*mcp_k8s_restart" "approvers_unreachable per action"
if grep -q "support-refunds" "$tmp/err"; then bad "a group alice keeps is reported"; else ok; fi
expect_in "$tmp/out" "^ok: .*, 8 warnings" "4 unknown entries and 4 unreachable actions"
expect_exit 3 "check --strict with unreachable approvers" "$bin" check --strict -c "$tmp/ex3/runwarden.yaml"
# A webhook identity decides too (webhook:HOST), as it does in serve.
sed -i 's/approvers: \[sales-ops\]/approvers: [webhook:ops.example]/' "$tmp/ex3/runbooks/sales-crm-enrichment.yaml"
sed -i 's|^  # webhooks:$|  webhooks:|; s|^  #   - {url: "https://ops.example|    - {url: "https://ops.example|' "$tmp/ex3/runwarden.yaml"
expect_exit 0 "check with a webhook approver" "$bin" check -c "$tmp/ex3/runwarden.yaml"
expect_in "$tmp/out" "^ok: .*, 6 warnings" "the webhook identity is known"
if grep -q "sales-crm" "$tmp/err"; then bad "webhook:ops.example is reported"; else ok; fi
# A malformed tokens file is an error (serve refuses it); a missing one is only noted.
echo "bob not-a-hash" >>"$tmp/ex3/operators.txt"
expect_exit 1 "check with a malformed tokens file" "$bin" check -c "$tmp/ex3/runwarden.yaml"
expect_in "$tmp/err" "operators.txt:[0-9]+: " "the tokens file error has file:line"
rm "$tmp/ex3/operators.txt"
expect_exit 0 "check with no tokens file yet" "$bin" check --strict -c "$tmp/ex3/runwarden.yaml"
expect_in "$tmp/err" "operator_tokens_file: note: .* does not exist yet" "a missing tokens file is noted"

# --help tells the truth about the exit codes, 3 included.
expect_exit 0 "check --help" "$bin" check --help
expect_in "$tmp/out" "^ +3 +valid but with warnings and --strict" "check --help names exit 3"

expect_exit 0 "explain a denied DELETE" "$bin" explain -c "$src/examples/runwarden.yaml" \
  --method DELETE --url http://127.0.0.1:18080/customers/42 --json
expect_in "$tmp/out" '"verdict": ?"deny"' "explain --json verdict"
expect_exit 0 "explain a small refund" "$bin" explain -c "$src/examples/runwarden.yaml" \
  --method POST --url http://127.0.0.1:18080/refunds --header 'Content-Type: application/json' \
  --body '{"amount":1200}'
expect_in "$tmp/out" "verdict: +allow" "explain allows a small refund"
expect_exit 1 "explain refuses an encoded slash" "$bin" explain -c "$src/examples/runwarden.yaml" \
  --method GET --url 'http://127.0.0.1:18080/logs/..%2Fsecrets'

# The demo exports http_proxy first: an admin or metrics curl it prints that went through the
# proxy would get 403 loop_refused, so each one must bypass it.
admin_curls=$(grep -cE "curl .*127\.0\.0\.1:15000" "$src/scripts/demo.sh")
[ "$admin_curls" -ge 2 ] && ok || bad "demo.sh prints no admin curl ($admin_curls)"
if grep -E "curl .*127\.0\.0\.1:15000" "$src/scripts/demo.sh" | grep -vq -- "--noproxy '\*'"; then
  bad "demo.sh prints an admin curl without --noproxy '*'"
else ok; fi
grep -q "export http_proxy=http://127.0.0.1:15001" "$src/scripts/demo.sh" && ok || bad "demo.sh no longer exports http_proxy (update this test)"

# audit query / blast-radius over a hand-written log (they read records; verify checks the chain).
mkdir -p "$tmp/log"
long_run=run_637ff480a1b2c3d4e5f60718
cat >"$tmp/log/audit.jsonl" <<EOF
{"v":1,"seq":1,"ts":"2026-11-21T10:00:00.000000Z","type":"exchange","id":"req_1","run":"$long_run","action":"demo_delete_anything","outcome":"denied","request":{"method":"DELETE","url":"http://127.0.0.1:18080/customers/42"}}
{"v":1,"seq":2,"ts":"2026-11-21T10:00:01.000000Z","type":"exchange","id":"req_2","run":"run_other","action":"demo_status","outcome":"forwarded","request":{"method":"GET","url":"http://127.0.0.1:18080/status"},"response":{"status":200}}
EOF
expect_exit 2 "query with an unknown --outcome" "$bin" audit query "$tmp/log" --outcome paused_xyz
expect_in "$tmp/err" '"paused_xyz" is not an outcome; one of: .*approval_timeout' "unknown outcome lists the valid ones"
expect_exit 0 "query --outcome denied" "$bin" audit query "$tmp/log" --outcome denied
expect_in "$tmp/out" "DELETE http://127.0.0.1:18080/customers/42" "a valid outcome still filters"
expect_exit 0 "query prints the table" "$bin" audit query "$tmp/log"
expect_in "$tmp/out" " $long_run +denied" "the run id is printed whole"
expect_exit 3 "blast-radius of a cut run id" "$bin" audit blast-radius --run run_637ff480 "$tmp/log"
expect_in "$tmp/out" "no records" "blast-radius says the run has no records"
expect_in "$tmp/out" "^  $long_run\$" "blast-radius names the whole id it may mean"
expect_exit 3 "blast-radius of an id copied with its '~'" "$bin" audit blast-radius --run 'run_637ff480~' "$tmp/log"
expect_in "$tmp/out" "^  $long_run\$" "a trailing ~ is dropped for the candidates"
expect_exit 0 "blast-radius of the whole id" "$bin" audit blast-radius --run "$long_run" "$tmp/log"
expect_in "$tmp/out" "^run $long_run: 1 calls" "the whole id finds the run"

# No log where the operator looked: each command names the path it searched and where the
# log really is (audit.path, relative to the config file).
mkdir -p "$tmp/empty"
for cmd in "verify" "query" "blast-radius --run r"; do
  # shellcheck disable=SC2086
  expect_exit 2 "audit $cmd without a log" "$bin" audit $cmd "$tmp/empty"
  expect_in "$tmp/err" "no audit log found: searched $tmp/empty" "audit $cmd names the path"
  expect_in "$tmp/err" "audit.path points, relative to the config" "audit $cmd says where the log is"
done
(cd "$tmp" && "$bin" audit blast-radius --run r audit/ >"$tmp/out" 2>"$tmp/err")
expect_in "$tmp/err" "searched audit/ \($tmp/audit/\)" "a relative path is shown resolved too"

expect_exit 0 "ca init" "$bin" ca init "$tmp/ca"
[ "$(stat -c %a "$tmp/ca/ca.key")" = 600 ] && ok || bad "ca.key is not 0600"
openssl x509 -in "$tmp/ca/ca.pem" -noout -text 2>/dev/null | grep -q "CA:TRUE" && ok || bad "ca.pem is not a CA"
expect_exit 1 "ca init refuses to overwrite" "$bin" ca init "$tmp/ca"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
