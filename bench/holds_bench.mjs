// Holds benchmark (issue 5): HOLDS raw loopback connections each send one small POST that
// the runbook holds; once all are pending, runwarden's RSS is read from /proc; then SAMPLES
// holds are approved one at a time and the time from the approve call returning to the
// upstream receiving the request is measured (same process, same clock). Bounded: every
// wait has a deadline; the wrapper adds a 600 s timeout.
import { execFileSync, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const HOLDS = Number(process.argv[2] ?? 10000);
const SAMPLES = Math.min(Number(process.argv[3] ?? 1000), HOLDS);
const bin = process.env.RUNWARDEN_BIN;
if (!bin || !fs.existsSync(bin)) throw new Error("RUNWARDEN_BIN must name the runwarden binary");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

// Upstream: records the arrival time of every request by its ?m= id.
const arrivals = new Map();
const upstream = http.createServer((req, res) => {
  const t = now();
  const id = new URL(req.url, "http://x").searchParams.get("m");
  arrivals.set(id, t);
  req.resume();
  req.on("end", () => res.writeHead(200, { "content-type": "text/plain" }).end("ok"));
});
upstream.maxConnections = HOLDS + 100;
await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
const upPort = upstream.address().port;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "runwarden-holds-bench-"));
const token = crypto.randomBytes(16).toString("hex");
fs.mkdirSync(path.join(dir, "runbooks"));
fs.writeFileSync(path.join(dir, "tokens.txt"), `bench ${crypto.createHash("sha256").update(token).digest("hex")}\n`);
fs.writeFileSync(path.join(dir, "actions.yaml"), `actions:
  held_op:
    - {method: POST, host: 127.0.0.1, port: [${upPort}], path: "/hold"}
`);
fs.writeFileSync(path.join(dir, "runbooks", "bench.yaml"), `runbook: bench
owner: bench
allowed_actions:
  approval_required: [held_op]
unmatched: deny
`);
execFileSync(bin, ["ca", "init", path.join(dir, "certs"), "--days", "2"], { stdio: "ignore" });
const proxyPort = await freePort();
const adminPort = await freePort();
fs.writeFileSync(path.join(dir, "runwarden.yaml"), `listen:
  proxy: 127.0.0.1:${proxyPort}
  admin: 127.0.0.1:${adminPort}
agent: {id: bench-agent}
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: bench
tls: {ca_cert: certs/ca.pem, ca_key: certs/ca.key}
approvals:
  hold_timeout: 10m
  max_pending: ${HOLDS + 100}
  operator_tokens_file: tokens.txt
audit:
  path: audit/audit.jsonl
  fsync: 50ms
limits:
  max_connections: ${HOLDS * 2 + 100}
  idle_timeout: 600s
threads: 2
`);
const rw = spawn(bin, ["serve", "-c", "runwarden.yaml", "--log-level", "warn"], { cwd: dir, stdio: ["ignore", "ignore", "inherit"] });
const rss = () => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${rw.pid}/status`, "utf8"));
  return Number(m[1]) / 1024;
};
for (let deadline = Date.now() + 15000; ; await sleep(50)) {
  const ok = await new Promise((r) => { const s = net.connect(adminPort, "127.0.0.1", () => { s.destroy(); r(true); }); s.on("error", () => r(false)); });
  if (ok) break;
  if (Date.now() > deadline) throw new Error("runwarden did not start");
}
const idleRss = rss();

const adminAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function admin(method, p) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: adminPort, path: p, method, agent: adminAgent,
      headers: { authorization: `Bearer ${token}`, "content-length": 0 } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.end();
  });
}

// Open HOLDS connections, each with one small POST (in batches, to respect the backlog).
const sockets = [];
const t0 = now();
for (let i = 0; i < HOLDS; i += 500) {
  const batch = [];
  for (let j = i; j < Math.min(HOLDS, i + 500); j++) {
    batch.push(new Promise((resolve) => {
      const id = `h${j}`;
      const s = net.connect(proxyPort, "127.0.0.1", () => {
        const body = `{"n":${j}}`;
        s.write(`POST http://127.0.0.1:${upPort}/hold?m=${id} HTTP/1.1\r\nHost: 127.0.0.1:${upPort}\r\n` +
          `Runwarden-Run: bench-${j}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        resolve();
      });
      s.on("error", () => resolve());
      s.on("data", () => {});
      sockets.push(s);
    }));
  }
  await Promise.all(batch);
}
let pending = [];
for (let deadline = Date.now() + 120000; ; await sleep(500)) {
  const r = await admin("GET", "/v1/approvals?state=pending");
  pending = JSON.parse(r.body).approvals;
  if (pending.length >= HOLDS) break;
  if (Date.now() > deadline) throw new Error(`only ${pending.length} of ${HOLDS} holds pending`);
}
const heldMs = now() - t0;
await sleep(1000);
const heldRss = rss();

// Approve SAMPLES holds one by one; latency = upstream arrival - approve response.
const afterReturn = [];
const afterSend = [];
for (const h of pending.slice(0, SAMPLES)) {
  const id = new URL(h.packet.request.url).searchParams.get("m");
  const sent = now();
  const r = await admin("POST", `/v1/approvals/${h.id}/approve`);
  const returned = now();
  if (r.status !== 200) throw new Error(`approve ${h.id}: ${r.status} ${r.body}`);
  for (let deadline = Date.now() + 5000; !arrivals.has(id); ) {
    if (Date.now() > deadline) throw new Error(`approved ${h.id} never arrived`);
    await new Promise((r2) => setImmediate(r2));
  }
  afterReturn.push(arrivals.get(id) - returned);
  afterSend.push(arrivals.get(id) - sent);
}
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]; };
const result = {
  holds: HOLDS,
  time_to_hold_all_ms: Math.round(heldMs),
  rss_idle_mib: Number(idleRss.toFixed(1)),
  rss_with_holds_mib: Number(heldRss.toFixed(1)),
  rss_per_hold_kib: Number((((heldRss - idleRss) * 1024) / HOLDS).toFixed(2)),
  samples: SAMPLES,
  approve_return_to_upstream_ms: { p50: Number(pct(afterReturn, 50).toFixed(3)), p99: Number(pct(afterReturn, 99).toFixed(3)), max: Number(Math.max(...afterReturn).toFixed(3)) },
  approve_sent_to_upstream_ms: { p50: Number(pct(afterSend, 50).toFixed(3)), p99: Number(pct(afterSend, 99).toFixed(3)) },
  forwarded: arrivals.size,
};
console.log(JSON.stringify(result, null, 2));
for (const s of sockets) s.destroy();
rw.kill("SIGTERM");
await new Promise((r) => { const t = setTimeout(() => { rw.kill("SIGKILL"); r(); }, 15000); rw.once("exit", () => { clearTimeout(t); r(); }); });
upstream.closeAllConnections();
upstream.close();
fs.rmSync(dir, { recursive: true, force: true });
if (result.forwarded !== SAMPLES) { console.error(`forwarded ${result.forwarded}, approved ${SAMPLES}`); process.exit(1); }
