#!/usr/bin/env python3
"""Static checks of deploy/kubernetes (no cluster needed; needs PyYAML: Debian python3-yaml).

Parses every YAML file and asserts the invariants the sidecar's security rests on: the
iptables UID and port agree with the runwarden container and runwarden.yaml, the agent never
runs as runwarden's UID, only the iptables init container has capabilities (NET_ADMIN and
NET_RAW), every container has resources and a read-only root, probes hit the admin health
endpoints, the Service exposes only the admin port, and every generator input is either
committed or produced by generate-secrets.sh. Exit 1 with one line per problem.
"""
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)


def load(rel):
    with open(os.path.join(HERE, rel), encoding="utf-8") as f:
        return list(yaml.safe_load_all(f))


parsed = {}
for root, _, files in os.walk(HERE):
    for name in files:
        if name.endswith((".yaml", ".yml")):
            rel = os.path.relpath(os.path.join(root, name), HERE)
            try:
                parsed[rel] = load(rel)
            except yaml.YAMLError as e:
                problems.append(f"{rel}: does not parse: {e}")

kust = parsed["kustomization.yaml"][0]
for res in kust["resources"]:
    check(res in parsed, f"kustomization: resource {res} missing")
for gen in kust.get("configMapGenerator", []) + kust.get("secretGenerator", []):
    for f in gen.get("files", []) + gen.get("envs", []):
        path = f.split("=", 1)[-1]
        check(os.path.exists(os.path.join(HERE, path)) or path.startswith("secrets/"),
              f"kustomization: {gen['name']}: {path} missing")

deploy = parsed["deployment.yaml"][0]
pod = deploy["spec"]["template"]["spec"]
inits = {c["name"]: c for c in pod["initContainers"]}
containers = {c["name"]: c for c in pod["containers"]}
rw = containers["runwarden"]
ipt = inits["runwarden-iptables"]
env = {e["name"]: e.get("value") for e in ipt["env"]}
rw_uid = rw["securityContext"]["runAsUser"]
check(str(rw_uid) == env["RUNWARDEN_UID"], f"RUNWARDEN_UID {env['RUNWARDEN_UID']} != runwarden runAsUser {rw_uid}")
check(rw_uid == 15001, "runwarden must run as uid 15001 (the image's user)")

config = parsed["config/runwarden.yaml"][0]
transparent = config["listen"]["transparent"]
transparent = transparent if isinstance(transparent, list) else [transparent]
hosts = set()
for endpoint in transparent:
    host, tport = endpoint.rsplit(":", 1)
    hosts.add(host)
    check(tport == env["RUNWARDEN_TRANSPARENT_PORT"],
          f"listen.transparent {endpoint}: port {tport} != RUNWARDEN_TRANSPARENT_PORT {env['RUNWARDEN_TRANSPARENT_PORT']}")
# REDIRECT in nat OUTPUT targets loopback: 127.0.0.1 (iptables) and [::1] (ip6tables).
check("127.0.0.1" in hosts or "[::]" in hosts,
      "listen.transparent must include 127.0.0.1 (or dual-stack [::]): iptables REDIRECT targets it")
if env.get("RUNWARDEN_IPV6", "auto") != "off":
    check("[::1]" in hosts or "[::]" in hosts,
          "listen.transparent must include [::1] (or dual-stack [::]) unless RUNWARDEN_IPV6=off: "
          "ip6tables REDIRECT targets it")
admin_port = int(config["listen"]["admin"].rsplit(":", 1)[1])

for name, c in {**inits, **containers}.items():
    sc = c.get("securityContext", {})
    check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation must be false")
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem must be true")
    caps = sc.get("capabilities", {})
    check(caps.get("drop") == ["ALL"], f"{name}: must drop ALL capabilities")
    added = sorted(caps.get("add", []))
    if name == "runwarden-iptables":
        check(added == ["NET_ADMIN", "NET_RAW"], f"{name}: capabilities must be NET_ADMIN+NET_RAW, got {added}")
    else:
        check(added == [], f"{name}: must add no capability, got {added}")
        check(sc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot must be true")
    res = c.get("resources", {})
    check("requests" in res and "limits" in res, f"{name}: needs resource requests and limits")
    if name not in ("runwarden-iptables", "runwarden-ca-key", "runwarden"):
        check(sc.get("runAsUser") not in (None, 0, rw_uid),
              f"{name}: must run as a UID other than 0 and {rw_uid}, or it bypasses runwarden")

agent_env = {e["name"]: e.get("value") for e in containers["agent"]["env"]}
for var in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"):
    check(var in agent_env, f"agent: {var} must point at the runwarden CA bundle")

ports = {p["name"]: p["containerPort"] for p in rw["ports"]}
check(ports.get("admin") == admin_port, f"runwarden admin containerPort != listen.admin port {admin_port}")
check(rw["readinessProbe"]["httpGet"]["path"] == "/readyz", "readinessProbe must be GET /readyz")
check(rw["livenessProbe"]["httpGet"]["path"] == "/healthz", "livenessProbe must be GET /healthz")

svc = parsed["service.yaml"][0]
check([p["targetPort"] for p in svc["spec"]["ports"]] == ["admin"], "Service must expose only the admin port")

for p in problems:
    print(f"check-manifests: {p}", file=sys.stderr)
print(f"check-manifests: {len(parsed)} YAML files parsed, {len(problems)} problems")
sys.exit(1 if problems else 0)
