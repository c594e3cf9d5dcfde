// Starts the real `runwarden serve` on a generated config in a temp dir and stops it with
// SIGTERM. Its interception CA is made with `runwarden ca init`; its upstream trust is the
// per-run test CA. Nothing here is a stand-in: without RUNWARDEN_BIN the suite fails.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

const START_LIMIT_MS = 15000;
const STOP_LIMIT_MS = 15000;

/** The runwarden binary under test; a missing one fails the suite (never skips it). */
export function runwardenBin() {
  const bin = process.env.RUNWARDEN_BIN;
  if (!bin) throw new Error("RUNWARDEN_BIN is not set: run through ctest (integration_node) or set it to the runwarden binary");
  if (!fs.existsSync(bin)) throw new Error(`RUNWARDEN_BIN=${bin} does not exist`);
  return bin;
}

/** A port that was free a moment ago (runwarden's listen config needs a number). */
export async function freePort() {
  const srv = net.createServer();
  await new Promise((r, j) => { srv.once("error", j); srv.listen(0, "127.0.0.1", r); });
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** True when something accepts a TCP connection on 127.0.0.1:port (bounded: 500 ms). */
export function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    s.setTimeout(500, () => done(false));
  });
}

const yamlList = (items) => `[${items.map((s) => JSON.stringify(s)).join(", ")}]`;

/**
 * The catalogue and runbook the suite runs against. `ports` are the upstream ports the
 * tests may reach (runwarden refuses CONNECT to ports no action names).
 */
export function testPolicy(ports) {
  const hosts = yamlList(["localhost", "127.0.0.1"]);
  const portList = `[${ports.join(", ")}]`;
  const on = `host: ${hosts}, port: ${portList}`;
  const catalogue = `actions:
  read_echo:
    - {method: [GET, HEAD], ${on}, path: "/echo"}
    - {method: [GET, HEAD], ${on}, path: "/echo/**"}
  write_echo:
    - {method: POST, ${on}, path: "/echo", body: {/kind: {in: [note, refund]}}}
  upload_files:
    - {method: PUT, ${on}, path: "/upload/**"}
  stream_reads:
    - {method: GET, ${on}, path: "/sse"}
    - {method: GET, ${on}, path: "/chunked"}
    - {method: GET, ${on}, path: "/large"}
  delete_anything:
    - {method: DELETE, ${on}, path: "/**"}
  forbidden_area:
    - {${on}, path: "/denied/**"}
  mcp_session:
    - {method: GET, ${on}, path: "/mcp"}
    - {method: POST, ${on}, path: "/mcp", jsonrpc: {method: [initialize, notifications/initialized, tools/list, ping]}}
  mcp_read_logs:
    - {method: POST, ${on}, path: "/mcp", mcp: {tool: read_logs}}
  mcp_restart_service:
    - {method: POST, ${on}, path: "/mcp", mcp: {tool: restart_service}}
  mcp_delete_namespace:
    - {method: POST, ${on}, path: "/mcp", mcp: {tool: delete_namespace}}
`;
  const runbook = `runbook: integration
owner: integration-tests
trigger: {alert: integration_suite}
allowed_actions:
  read_only: [read_echo, stream_reads, mcp_session, mcp_read_logs]
  allowed: [write_echo, upload_files]
  approval_required:
    - action: mcp_restart_service
      risk: medium
      effect: "the service restarts"
      rollback: "none needed"
      timeout: 30s
  denied: [delete_anything, forbidden_area, mcp_delete_namespace]
unmatched: deny
`;
  return { catalogue, runbook };
}

/**
 * Starts runwarden. Options: { trustBundle (PEM path), ports (upstream ports), dir }.
 * Returns { proxyUrl, proxyPort, adminUrl, caPath, caPem, auditPath, dir, logs(), stop() }.
 */
export async function startRunwarden({ trustBundle, ports, dir }) {
  const bin = runwardenBin();
  fs.mkdirSync(dir, { recursive: true });
  execFileSync(bin, ["ca", "init", path.join(dir, "certs"), "--name", "runwarden integration CA", "--days", "2"],
    { stdio: ["ignore", "pipe", "pipe"], timeout: 20000 });
  const caPath = path.join(dir, "certs", "ca.pem");
  const { catalogue, runbook } = testPolicy(ports);
  fs.writeFileSync(path.join(dir, "actions.yaml"), catalogue);
  fs.mkdirSync(path.join(dir, "runbooks"), { recursive: true });
  fs.writeFileSync(path.join(dir, "runbooks", "integration.yaml"), runbook);
  const proxyPort = await freePort();
  const adminPort = await freePort();
  const config = `listen:
  proxy: 127.0.0.1:${proxyPort}
  admin: 127.0.0.1:${adminPort}
agent: {id: integration-agent}
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: integration
tls:
  ca_cert: certs/ca.pem
  ca_key: certs/ca.key
  upstream_trust: ${JSON.stringify(trustBundle)}
audit:
  path: audit/audit.jsonl
  fsync: always
  body_bytes: 16KiB
limits:
  inspect_body_bytes: 1MiB
  upstream_connect_timeout: 5s
  upstream_response_timeout: 20s
threads: 2
`;
  const configPath = path.join(dir, "runwarden.yaml");
  fs.writeFileSync(configPath, config);

  const out = fs.openSync(path.join(dir, "runwarden.out.log"), "w");
  const child = spawn(bin, ["serve", "-c", configPath], { cwd: dir, stdio: ["ignore", out, out] });
  fs.closeSync(out);
  let exited = null;
  const exitPromise = new Promise((resolve) => child.once("exit", (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  const logs = () => {
    try { return fs.readFileSync(path.join(dir, "runwarden.out.log"), "utf8"); } catch { return ""; }
  };

  const deadline = Date.now() + START_LIMIT_MS;
  for (;;) {
    if (exited) throw new Error(`runwarden serve exited early (${JSON.stringify(exited)}):\n${logs()}`);
    if (await canConnect(proxyPort)) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`runwarden did not listen on 127.0.0.1:${proxyPort} within ${START_LIMIT_MS} ms:\n${logs()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    dir,
    proxyPort,
    proxyUrl: `http://127.0.0.1:${proxyPort}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    caPath,
    caPem: fs.readFileSync(caPath, "utf8"),
    auditPath: path.join(dir, "audit", "audit.jsonl"),
    logs,
    /** SIGTERM, then wait (bounded) for the drain; returns { code, signal }. */
    async stop() {
      if (exited) return exited;
      child.kill("SIGTERM");
      const timer = new Promise((r) => setTimeout(() => r(null), STOP_LIMIT_MS));
      const result = await Promise.race([exitPromise, timer]);
      if (result) return result;
      child.kill("SIGKILL");
      await exitPromise;
      return { code: null, signal: "SIGKILL", timedOut: true };
    },
  };
}
