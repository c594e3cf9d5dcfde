#!/usr/bin/env bash
# Creates what kustomization.yaml reads from secrets/ (see secrets/README.md). Idempotent:
# existing files are kept. Needs openssl; uses `runwarden ca init` when runwarden is on PATH.
#
#   generate-secrets.sh                    create whatever is missing
#   generate-secrets.sh --operator NAME    add an operator token (printed once, stored hashed)
#   CA rotation (docs/deploy.md), each step followed by `kubectl apply -k`:
#   generate-secrets.sh --stage-ca         1. new CA in next/; the bundle trusts old + new,
#                                             runwarden still signs with the old one
#   generate-secrets.sh --promote-ca       2. runwarden signs with the new CA; the old one
#                                             stays in the bundle (trust/) until pods rolled
#   generate-secrets.sh --drop-old-cas     3. the bundle trusts only the current CA
#   --dir DIR                              write there instead of secrets/ beside this script
# RUNWARDEN_SYSTEM_CA_BUNDLE: the system CAs to include in ca-bundle.pem
#                             [/etc/ssl/certs/ca-certificates.crt]
set -euo pipefail
die() {
  echo "generate-secrets: error: $*" >&2
  exit 2
}
say() { echo "generate-secrets: $*" >&2; }

dir=$(cd "$(dirname "$0")" && pwd)/secrets
action=create
operator=""
while (($#)); do
  case "$1" in
  --dir)
    (($# >= 2)) || die "--dir needs a value"
    dir=$2
    shift
    ;;
  --operator)
    (($# >= 2)) || die "--operator needs a NAME"
    operator=$2
    [[ $operator =~ ^[A-Za-z0-9._@-]{1,64}$ ]] || die "operator name '$operator': use [A-Za-z0-9._@-]"
    shift
    ;;
  --stage-ca) action=stage ;;
  --promote-ca) action=promote ;;
  --drop-old-cas) action=drop ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
  *) die "unknown argument '$1'" ;;
  esac
  shift
done
command -v openssl >/dev/null || die "openssl not found"
system_bundle=${RUNWARDEN_SYSTEM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
mkdir -p "$dir/trust"
umask 077

new_ca() { # target-dir
  local out=$1 tmp
  tmp=$(mktemp -d)
  if command -v runwarden >/dev/null; then
    runwarden ca init "$tmp/ca" >&2
  else
    mkdir -p "$tmp/ca"
    cat >"$tmp/openssl.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = v3
prompt = no
[dn]
CN = runwarden CA $(date -u +%Y-%m-%d)
[v3]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
CNF
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
      -days 3650 -config "$tmp/openssl.cnf" -keyout "$tmp/ca/ca.key" -out "$tmp/ca/ca.pem" 2>/dev/null
  fi
  mkdir -p "$out"
  install -m 0600 "$tmp/ca/ca.key" "$out/ca.key"
  install -m 0644 "$tmp/ca/ca.pem" "$out/ca.pem"
  rm -rf -- "$tmp"
  say "new CA in $out: $(openssl x509 -in "$out/ca.pem" -noout -subject -fingerprint -sha256)"
}

add_operator() {
  local name=$1 token hash
  if [[ -f $dir/tokens.txt ]] && grep -q "^$name " "$dir/tokens.txt"; then
    die "operator '$name' already has a token in tokens.txt (delete its line to replace it)"
  fi
  token=$(openssl rand -hex 32)
  hash=$(printf '%s' "$token" | openssl dgst -sha256 -r | cut -d' ' -f1)
  echo "$name $hash" >>"$dir/tokens.txt"
  say "operator '$name' token (shown once, store it in your secret manager): $token"
}

case "$action" in
stage)
  [[ -f $dir/ca.pem ]] || die "no current CA in $dir to rotate"
  [[ ! -e $dir/next/ca.pem ]] || die "a staged CA already exists in $dir/next: --promote-ca it"
  new_ca "$dir/next"
  ;;
promote)
  [[ -f $dir/next/ca.pem && -f $dir/next/ca.key ]] || die "no staged CA: run --stage-ca first"
  old="$dir/trust/retired-$(date -u +%Y%m%dT%H%M%SZ).pem"
  cp "$dir/ca.pem" "$old"
  mv -f "$dir/next/ca.key" "$dir/ca.key"
  mv -f "$dir/next/ca.pem" "$dir/ca.pem"
  rmdir "$dir/next"
  say "promoted the staged CA; the old one stays trusted as $old"
  ;;
drop)
  rm -f -- "$dir"/trust/*.pem
  say "old CAs removed from the bundle"
  ;;
create)
  [[ -f $dir/ca.pem && -f $dir/ca.key ]] || new_ca "$dir"
  [[ -f $dir/tokens.txt ]] || add_operator "${operator:-oncall}"
  [[ -n $operator ]] && ! grep -q "^$operator " "$dir/tokens.txt" && add_operator "$operator"
  [[ -f $dir/webhook.env ]] || echo "RUNWARDEN_WEBHOOK_SECRET=$(openssl rand -hex 32)" >"$dir/webhook.env"
  ;;
esac

# The agent's trust bundle: system CAs (for passthrough hosts), the current CA, kept old CAs.
[[ -r $system_bundle ]] || die "system CA bundle '$system_bundle' not readable"
{
  cat "$system_bundle"
  echo "# runwarden CA (current)"
  cat "$dir/ca.pem"
  for f in "$dir"/next/ca.pem "$dir"/trust/*.pem; do
    [[ -e $f ]] || continue
    echo "# runwarden CA (rotation): ${f#"$dir"/}"
    cat "$f"
  done
} >"$dir/ca-bundle.pem.tmp"
chmod 0644 "$dir/ca-bundle.pem.tmp"
mv "$dir/ca-bundle.pem.tmp" "$dir/ca-bundle.pem"
say "wrote $dir (ca.pem, ca.key, tokens.txt, webhook.env, ca-bundle.pem)"
