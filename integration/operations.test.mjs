// Operations end to end (DESIGN §5 and §7, issue 6), real parts only: the real `runwarden
// serve`, undici keep-alive clients and curl as agents, the recording upstream, the real
// admin API with an operator token, the kill-switch file, signals, hot reload and /metrics.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import { Client, fetch } from "undici";
import { readAudit, waitForExchanges } from "./lib/audit.mjs";
import { makeTestPki } from "./lib/pki.mjs";
import { parsePrometheus } from "./lib/prom_parse.mjs";
import { freePort } from "./lib/runwarden.mjs";
import { adminClient, initCa, serve, sha256, writeTokensFile } from "./lib/serve.mjs";
import { startUpstream } from "./lib/upstream.mjs";

const TOKEN = crypto.randomBytes(16).toString("hex");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function catalogue(port) {
  const on = `host: ["127.0.0.1"], port: [${port}]`;
  return `actions:
  read_echo:
    - {method: GET, ${on}, path: "/echo/**"}
  write_echo:
    - {method: POST, ${on}, path: "/echo/**"}
  refund:
    - {method: POST, ${on}, path: "/refund/**"}
  delete_anything:
    - {method: DELETE, ${on}, path: "/**"}
`;
}

const OPS_RUNBOOK = `runbook: ops
owner: integration-tests
allowed_actions:
  read_only: [read_echo]
  allowed: [write_echo]
  denied: [delete_anything]
unmatched: deny
`;

// Per-action count and a value-aware sum, refused at the boundary (the run lives on).
const BUDGETS_RUNBOOK = `runbook: budgets
owner: integration-tests
allowed_actions:
  read_only: [read_echo]
  allowed: [write_echo, refund]
budgets:
  actions: {write_echo: 3}
  sums:
    - {action: refund, pointer: /amount, max: 100, window: 1h}
  on_exceed: refuse
unmatched: deny
`;

// A total call budget that kills the run when crossed.
const KILL_RUNBOOK = `runbook: killer
owner: integration-tests
allowed_actions:
  read_only: [read_echo]
budgets: {calls: 3, on_exceed: kill_run}
unmatched: deny
`;

const reloadRunbook = (writeClass) => `runbook: reloadable
owner: integration-tests
allowed_actions:
  read_only: [read_echo]
  ${writeClass}: [write_echo]
unmatched: deny
`;

/** Replaces a file in one step (the file watch must never see half of it). */
function replaceFile(file, text, scratch) {
  const tmp = path.join(scratch, `swap-${crypto.randomBytes(4).toString("hex")}`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

describe("operations", () => {
  let tmp, pki, upstream, dir, proxyPort, adminUrl, auditPath, killSwitch, rw, admin;
  const logs = () => rw?.logs() ?? "";

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "runwarden-it-operations-"));
    pki = makeTestPki(path.join(tmp, "pki"));
    upstream = await startUpstream({ tlsCert: pki.good, name: "good" });
    dir = path.join(tmp, "rw");
    fs.mkdirSync(path.join(dir, "runbooks"), { recursive: true });
    await initCa(dir);
    fs.writeFileSync(path.join(dir, "actions.yaml"), catalogue(upstream.httpPort));
    fs.writeFileSync(path.join(dir, "runbooks", "ops.yaml"), OPS_RUNBOOK);
    fs.writeFileSync(path.join(dir, "runbooks", "budgets.yaml"), BUDGETS_RUNBOOK);
    fs.writeFileSync(path.join(dir, "runbooks", "killer.yaml"), KILL_RUNBOOK);
    fs.writeFileSync(path.join(dir, "runbooks", "reloadable.yaml"), reloadRunbook("allowed"));
    writeTokensFile(path.join(dir, "tokens.txt"), [{ name: "alice", token: TOKEN }]);
    killSwitch = path.join(dir, "STOP");
    proxyPort = await freePort();
    const adminPort = await freePort();
    adminUrl = `http://127.0.0.1:${adminPort}`;
    auditPath = path.join(dir, "audit", "audit.jsonl");
    fs.writeFileSync(path.join(dir, "runwarden.yaml"), `listen:
  proxy: 127.0.0.1:${proxyPort}
  admin: 127.0.0.1:${adminPort}
agent: {id: operations-agent}
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: ops
selectable_runbooks: [ops, budgets, killer, reloadable]
kill_switch_file: STOP
tls:
  ca_cert: certs/ca.pem
  ca_key: certs/ca.key
  upstream_trust: ${JSON.stringify(pki.trustBundle)}
approvals:
  operator_tokens_file: tokens.txt
audit:
  path: audit/audit.jsonl
  fsync: always
threads: 2
`);
    rw = await serve({ dir, ports: [proxyPort, adminPort] });
    if (!rw.child) throw new Error(`runwarden exited at start ${JSON.stringify(rw.exited())}:\n${logs()}`);
    admin = adminClient(adminUrl, TOKEN);
  });

  after(async () => {
    await rw?.stop?.("SIGKILL");
    await upstream?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const runId = (label) => `it-${label}-${crypto.randomBytes(5).toString("hex")}`;

  /**
   * One request through the proxy on a fresh connection (absolute-form URI, as an
   * HTTP_PROXY client sends it). Returns { status, json, text }.
   */
  async function viaProxy(method, p, { run, runbook, body, client } = {}) {
    const own = client ?? new Client(`http://127.0.0.1:${proxyPort}`);
    try {
      const headers = { host: `127.0.0.1:${upstream.httpPort}` };
      if (run) headers["runwarden-run"] = run;
      if (runbook) headers["runwarden-runbook"] = runbook;
      if (body !== undefined) headers["content-type"] = "application/json";
      const res = await own.request({ method, path: `${upstream.httpUrl}${p}`, headers, body,
        headersTimeout: 15000, bodyTimeout: 15000 });
      const text = await res.body.text();
      let json = null;
      try { json = JSON.parse(text); } catch { /* not JSON */ }
      return { status: res.statusCode, json, text };
    } finally {
      if (!client) await own.close();
    }
  }

  const arrived = (marker) => upstream.requests.filter((r) => r.url.includes(marker));
  const auditEvents = (type) => readAudit(auditPath).filter((r) => r.type === type || r.event === type);

  async function setMode(mode) {
    const r = await admin("POST", "/v1/mode", { body: JSON.stringify({ mode }) });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.mode, mode);
    return r;
  }

  /** Polls `fn` (bounded) until it returns truthy; returns that value or the last one. */
  async function until(fn, limitMs) {
    const deadline = Date.now() + limitMs;
    let last;
    while (Date.now() < deadline) {
      last = await fn();
      if (last) return last;
      await sleep(50);
    }
    return last;
  }

  test("prom_parse: the strict parser rejects what a scraper could misread", () => {
    const good = `# HELP h_seconds A histogram.
# TYPE h_seconds histogram
h_seconds_bucket{k="a",le="0.1"} 1
h_seconds_bucket{k="a",le="1"} 3
h_seconds_bucket{k="a",le="+Inf"} 4
h_seconds_sum{k="a"} 2.5
h_seconds_count{k="a"} 4
# TYPE c_total counter
c_total{path="a\\\\b\\"q\\"\\n"} 1e3
`;
    const m = parsePrometheus(good);
    assert.equal(m.value("c_total", { path: 'a\\b"q"\n' }), 1000);
    assert.equal(m.value("h_seconds_count", { k: "a" }), 4);
    const bad = {
      "+Inf != _count": good.replace('le="+Inf"} 4', 'le="+Inf"} 5'),
      "decreasing buckets": good.replace('le="1"} 3', 'le="1"} 0'),
      "no +Inf": good.replace('h_seconds_bucket{k="a",le="+Inf"} 4\n', ""),
      "no _sum": good.replace('h_seconds_sum{k="a"} 2.5\n', ""),
      "bad value": good.replace("} 1e3", "} 1,000"),
      "bad escape": good.replace('q\\"', "q\\x"),
      "bad metric name": good.replace("c_total{", "1c_total{"),
      "bad label name": good.replace("{path=", "{pa-th="),
      "unquoted label": good.replace('{k="a",le="0.1"}', "{k=a,le=\"0.1\"}"),
      "duplicate series": `${good}c_total{path="x"} 1\nc_total{path="x"} 2\n`,
      "split group": `${good}# TYPE g gauge\ng 1\nc_total{path="y"} 1\n`,
      "TYPE after samples": `${good}# TYPE c_total counter\n`,
      "negative counter": good.replace("} 1e3", "} -1"),
      "no final newline": good.slice(0, -1),
    };
    for (const [why, text] of Object.entries(bad)) {
      assert.notEqual(text, good, `${why}: the mutation did not apply`);
      assert.throws(() => parsePrometheus(text), Error, `accepted: ${why}`);
    }
  });

  test("metrics: /metrics is strict Prometheus text and request counters move by exactly N", async () => {
    const scrape = async () => {
      const res = await fetch(`${adminUrl}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
      return parsePrometheus(await res.text());
    };
    const before0 = await scrape();
    for (const family of ["runwarden_request_duration_seconds", "runwarden_mode", "runwarden_open_connections"]) {
      assert.ok(before0.families.has(family), `${family} missing`);
    }
    assert.equal(before0.families.get("runwarden_request_duration_seconds")?.type, "histogram");
    assert.equal(before0.value("runwarden_mode"), 0, "mode gauge is not normal (0)");
    const allowLabels = { decision: "allow", action: "read_echo", runbook: "ops" };
    const denyLabels = { decision: "deny", action: "delete_anything", runbook: "ops" };
    const allow0 = before0.value("runwarden_requests_total", allowLabels) ?? 0;
    const deny0 = before0.value("runwarden_requests_total", denyLabels) ?? 0;
    const hist0 = before0.total("runwarden_request_duration_seconds_count");

    const N = 7;
    const D = 3;
    const run = runId("metrics");
    const client = new Client(`http://127.0.0.1:${proxyPort}`);
    try {
      for (let i = 0; i < N; i++) {
        const r = await viaProxy("GET", `/echo/metrics?m=${run}&i=${i}`, { run, client });
        assert.equal(r.status, 200, r.text);
      }
      for (let i = 0; i < D; i++) {
        const r = await viaProxy("DELETE", `/echo/metrics?m=${run}&d=${i}`, { run, client });
        assert.equal(r.status, 403, r.text);
      }
    } finally {
      await client.close();
    }
    assert.equal(arrived(run).length, N, "only the allowed requests reach the upstream");
    const after1 = await scrape();
    assert.equal(after1.value("runwarden_requests_total", allowLabels) - allow0, N);
    assert.equal(after1.value("runwarden_requests_total", denyLabels) - deny0, D);
    const hist1 = await until(async () => {
      const m = await scrape();
      return m.total("runwarden_request_duration_seconds_count") - hist0 >= N + D ? m : null;
    }, 3000);
    assert.ok(hist1, "request duration histogram did not count the requests");
    assert.equal(hist1.total("runwarden_request_duration_seconds_count") - hist0, N + D);
  });

  test("budgets: per-action count and value-aware sum refuse exactly at the boundary", async () => {
    const run = runId("budget");
    for (let i = 1; i <= 3; i++) {
      const r = await viaProxy("POST", `/echo/write?m=${run}&i=${i}`, { run, runbook: "budgets", body: '{"kind":"note"}' });
      assert.equal(r.status, 200, `call ${i} of 3: ${r.text}`);
    }
    const fourth = await viaProxy("POST", `/echo/write?m=${run}&i=4`, { run, runbook: "budgets", body: '{"kind":"note"}' });
    assert.equal(fourth.status, 403, fourth.text);
    assert.equal(fourth.json.error, "budget_exceeded");
    assert.equal(fourth.json.budget, "actions.write_echo");
    assert.equal(fourth.json.on_exceed, "refuse");
    assert.equal(arrived(`${run}&i=4`).length, 0, "the 4th call reached the upstream");
    // refuse: the run lives on; reads are not counted by that budget.
    const read = await viaProxy("GET", `/echo/read?m=${run}`, { run, runbook: "budgets" });
    assert.equal(read.status, 200, read.text);

    // Sum of /amount over refunds, max 100: 40 + 60 = 100 passes exactly; 0.5 more crosses.
    const srun = runId("sum");
    for (const [i, amount] of [[1, 40], [2, 60]]) {
      const r = await viaProxy("POST", `/refund/x?m=${srun}&i=${i}`, { run: srun, runbook: "budgets", body: JSON.stringify({ amount }) });
      assert.equal(r.status, 200, `refund ${amount}: ${r.text}`);
    }
    const over = await viaProxy("POST", `/refund/x?m=${srun}&i=3`, { run: srun, runbook: "budgets", body: '{"amount":0.5}' });
    assert.equal(over.status, 403, over.text);
    assert.equal(over.json.error, "budget_exceeded");
    assert.equal(over.json.budget, "sums[0]");
    const zero = await viaProxy("POST", `/refund/x?m=${srun}&i=4`, { run: srun, runbook: "budgets", body: '{"amount":0}' });
    assert.equal(zero.status, 200, `a zero refund keeps the sum at the limit: ${zero.text}`);
    const missing = await viaProxy("POST", `/refund/x?m=${srun}&i=5`, { run: srun, runbook: "budgets", body: '{"note":"no amount"}' });
    assert.equal(missing.status, 403, "a refund without /amount is refused (fail closed)");
    assert.equal(missing.json.error, "budget_exceeded");
    assert.deepEqual(arrived(srun).map((r) => new URL(r.url, "http://x").searchParams.get("i")), ["1", "2", "4"]);

    // A fresh run has its own budget.
    const other = await viaProxy("POST", `/refund/x?m=${runId("sum2")}`, { run: runId("sum2"), runbook: "budgets", body: '{"amount":100}' });
    assert.equal(other.status, 200, other.text);

    // calls: 3 with kill_run: the 4th call trips and kills the run; the 5th is refused as killed.
    const krun = runId("kill");
    for (let i = 1; i <= 3; i++) {
      const r = await viaProxy("GET", `/echo/k?m=${krun}&i=${i}`, { run: krun, runbook: "killer" });
      assert.equal(r.status, 200, `call ${i} of 3: ${r.text}`);
    }
    const k4 = await viaProxy("GET", `/echo/k?m=${krun}&i=4`, { run: krun, runbook: "killer" });
    assert.equal(k4.status, 403, k4.text);
    assert.equal(k4.json.error, "budget_exceeded");
    assert.equal(k4.json.budget, "calls");
    assert.equal(k4.json.on_exceed, "kill_run");
    const k5 = await viaProxy("GET", `/echo/k?m=${krun}&i=5`, { run: krun, runbook: "killer" });
    assert.equal(k5.status, 403, k5.text);
    assert.equal(k5.json.error, "run_killed");
    assert.equal(arrived(krun).length, 3);

    const trips = auditEvents("budget_exceeded");
    const fields = (e) => ({ ...e, ...(e.fields ?? {}), ...(e.data ?? {}) });
    const tripOf = (r) => trips.map(fields).filter((e) => e.run === r);
    assert.deepEqual(tripOf(run).map((e) => e.budget), ["actions.write_echo"]);
    assert.deepEqual(tripOf(srun).map((e) => e.budget), ["sums[0]", "sums[0]"]);
    assert.deepEqual(tripOf(krun).map((e) => e.budget), ["calls"]);
    const killed = auditEvents("run_killed").map(fields).filter((e) => e.run === krun);
    assert.equal(killed.length, 1, "the kill_run trip is recorded as run_killed");
    const runs = await admin("GET", "/v1/runs", { token: null });
    assert.equal(runs.json.runs.find((r) => r.run === krun)?.killed, true);

    const metrics = parsePrometheus(await (await fetch(`${adminUrl}/metrics`)).text());
    assert.equal(metrics.value("runwarden_budget_trips_total", { runbook: "budgets", budget: "actions.write_echo", on_exceed: "refuse" }), 1);
    assert.equal(metrics.value("runwarden_budget_trips_total", { runbook: "killer", budget: "calls", on_exceed: "kill_run" }), 1);
  });

  test("mode: no request that starts after POST /v1/mode paused is acknowledged is forwarded", async () => {
    const CLIENTS = 4;
    const MAX_REQUESTS = 400;
    const LIMIT_MS = 10000;
    const PAUSE_AFTER = 80;
    const run = runId("load");
    const results = [];
    let issued = 0;
    let pausedAt = null; // performance.now() when the 200 of POST /v1/mode arrived
    let pauseStarted = false;
    let pauseSentAt = null;
    const t0 = performance.now();
    const clients = Array.from({ length: CLIENTS }, () => new Client(`http://127.0.0.1:${proxyPort}`, { pipelining: 1 }));
    const pauseDone = (async () => {
      while (results.length < PAUSE_AFTER && performance.now() - t0 < LIMIT_MS / 2) await sleep(5);
      pauseStarted = true;
      pauseSentAt = performance.now();
      const r = await admin("POST", "/v1/mode", { body: '{"mode":"paused"}' });
      pausedAt = performance.now();
      return r;
    })();
    const afterPause = () => results.filter((x) => pausedAt !== null && x.start > pausedAt).length;
    try {
      await Promise.all(clients.map(async (client, c) => {
        while (issued < MAX_REQUESTS && performance.now() - t0 < LIMIT_MS) {
          if (pausedAt !== null && afterPause() >= 100) break;
          const i = issued++;
          const start = performance.now();
          const r = await viaProxy("GET", `/echo/load?m=${run}&c=${c}&i=${i}`, { run, client });
          results.push({ i, start, end: performance.now(), status: r.status, error: r.json?.error });
        }
      }));
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
    const mode = await pauseDone;
    assert.ok(pauseStarted);
    assert.equal(mode.status, 200, mode.text);
    assert.equal(mode.json.mode, "paused");
    assert.equal(mode.json.changed, true);

    const forwarded = new Set(arrived(run).map((r) => Number(new URL(r.url, "http://x").searchParams.get("i"))));
    const late = results.filter((x) => x.start > pausedAt);
    const early = results.filter((x) => x.end < pauseSentAt);
    assert.ok(late.length >= 20, `only ${late.length} requests started after the pause was acknowledged`);
    assert.ok(early.length >= 20, `only ${early.length} requests finished before the pause`);
    assert.ok(early.every((x) => x.status === 200), "a request before the pause was refused");
    if (process.env.RW_IT_VERBOSE) console.log(`load: ${results.length} requests, ${early.length} before, ${late.length} after the pause`);
    const leaked = late.filter((x) => forwarded.has(x.i) || x.status !== 503 || x.error !== "runwarden_paused");
    assert.deepEqual(leaked, [], "requests started after the pause was acknowledged were not refused");

    const status = await admin("GET", "/v1/status", { token: null });
    assert.equal(status.status, 200);
    assert.equal(status.json.mode, "paused");
    assert.equal(status.json.by, "alice");
    assert.equal(status.json.via, "admin_api");
    const pausedMetrics = parsePrometheus(await (await fetch(`${adminUrl}/metrics`)).text());
    assert.equal(pausedMetrics.value("runwarden_mode"), 2, "runwarden_mode is not 2 (paused)");
    assert.equal(pausedMetrics.value("runwarden_mode_changes_total", { to: "paused", via: "admin_api" }), 1);
    const since = Date.parse(status.json.since);
    assert.ok(Math.abs(since - Date.now()) < 60000, `since ${status.json.since} is not now`);
    const change = auditEvents("mode_changed").map((e) => ({ ...e, ...(e.fields ?? {}), ...(e.data ?? {}) }))
      .filter((e) => e.to === "paused" && e.by === "alice" && e.via === "admin_api");
    assert.equal(change.length, 1, "the mode change is in the audit log");
    const pausedRecords = readAudit(auditPath).filter((r) => r.type === "exchange" && r.run === run && r.outcome === "paused");
    assert.equal(pausedRecords.length, results.filter((x) => x.status === 503).length);

    // read_only: only read_only actions pass.
    await setMode("read_only");
    const rrun = runId("readonly");
    const read = await viaProxy("GET", `/echo/ro?m=${rrun}`, { run: rrun });
    assert.equal(read.status, 200, read.text);
    const write = await viaProxy("POST", `/echo/ro?m=${rrun}&w=1`, { run: rrun, body: '{"kind":"note"}' });
    assert.equal(write.status, 403, write.text);
    assert.equal(write.json.error, "denied_by_runbook");
    assert.match(write.text, /read_only_mode/);
    assert.equal(arrived(`${rrun}&w=1`).length, 0, "the write reached the upstream in read_only mode");
    await setMode("normal");
    const again = await viaProxy("POST", `/echo/ro?m=${rrun}&w=2`, { run: rrun, body: '{"kind":"note"}' });
    assert.equal(again.status, 200, again.text);
  });

  test("kill-switch file and SIGUSR1/SIGUSR2 stop and resume, seen only through the proxy", async () => {
    const run = runId("ks");
    const probe = async (i) => viaProxy("GET", `/echo/ks?m=${run}&i=${i}`, { run });
    let n = 0;
    assert.equal((await probe(n++)).status, 200);

    fs.writeFileSync(killSwitch, "");
    const paused = await until(async () => {
      const r = await probe(n++);
      return r.status === 503 ? r : null;
    }, 2000);
    assert.ok(paused, "the kill-switch file did not pause runwarden within 2 s");
    assert.equal(paused.json.error, "runwarden_paused");
    const stillPaused = await probe(n++);
    assert.equal(stillPaused.status, 503);
    const pausedFrom = n - 2;
    // The 250 ms poll records the switch as a mode change; wait (bounded) for that record.
    const ksEvents = () => auditEvents("mode_changed").map((e) => e.data ?? {}).filter((e) => e.via === "kill_switch_file");
    assert.ok(await until(() => ksEvents().some((e) => e.to === "paused" && e.kill_switch === true), 3000),
      "kill-switch pause not recorded");
    fs.unlinkSync(killSwitch);
    const resumed = await until(async () => {
      const r = await probe(n++);
      return r.status === 200 ? r : null;
    }, 2000);
    assert.ok(resumed, "removing the kill-switch file did not resume within 2 s");
    assert.ok(await until(() => ksEvents().some((e) => e.to === "normal" && e.kill_switch === false), 3000),
      "kill-switch removal not recorded");
    const passedWhilePaused = arrived(run).map((r) => Number(new URL(r.url, "http://x").searchParams.get("i")))
      .filter((i) => i >= pausedFrom && i < pausedFrom + 2);
    assert.deepEqual(passedWhilePaused, []);

    process.kill(rw.child.pid, "SIGUSR1");
    const sigPaused = await until(async () => {
      const r = await probe(n++);
      return r.status === 503 ? r : null;
    }, 2000);
    assert.ok(sigPaused, "SIGUSR1 did not pause within 2 s");
    assert.equal(sigPaused.json.error, "runwarden_paused");
    process.kill(rw.child.pid, "SIGUSR2");
    const sigResumed = await until(async () => {
      const r = await probe(n++);
      return r.status === 200 ? r : null;
    }, 2000);
    assert.ok(sigResumed, "SIGUSR2 did not resume within 2 s");

    const changes = auditEvents("mode_changed").map((e) => ({ ...e, ...(e.fields ?? {}), ...(e.data ?? {}) }));
    assert.ok(changes.some((e) => e.via === "signal" && e.to === "paused" && e.by === "signal:SIGUSR1"), "SIGUSR1 not recorded");
    assert.ok(changes.some((e) => e.via === "signal" && e.to === "normal" && e.by === "signal:SIGUSR2"), "SIGUSR2 not recorded");
  });

  test("reload: a broken runbook keeps the old policy; a good change applies with a new runbook_sha256", async () => {
    const file = path.join(dir, "runbooks", "reloadable.yaml");
    const oldSha = sha256(fs.readFileSync(file));
    const failed0 = readAudit(auditPath).filter((r) => r.type === "reload_failed" || r.event === "reload_failed").length;
    const write = (run, i) => viaProxy("POST", `/echo/rl?m=${run}&i=${i}`, { run, runbook: "reloadable", body: '{"kind":"note"}' });
    const run = runId("reload");
    assert.equal((await write(run, 0)).status, 200);

    replaceFile(file, "runbook: reloadable\nallowed_actions: [unclosed\n", tmp);
    rw.child.kill("SIGHUP");
    const failedEvent = await until(() => auditEvents("reload_failed").length > failed0, 5000);
    assert.ok(failedEvent, `no reload_failed audit event:\n${logs().slice(-2000)}`);
    const failure = auditEvents("reload_failed").at(-1);
    assert.match(JSON.stringify(failure), /reloadable\.yaml:\d+:\d+/, "the failure names file:line:col");
    const metrics = parsePrometheus(await (await fetch(`${adminUrl}/metrics`)).text());
    assert.ok(metrics.value("runwarden_reloads_total", { result: "failed" }) >= 1);
    const kept = await write(run, 1);
    assert.equal(kept.status, 200, `old policy no longer enforced: ${kept.text}`);
    const del = await viaProxy("DELETE", `/echo/rl?m=${run}&i=2`, { run, runbook: "reloadable" });
    assert.equal(del.status, 403);
    const keptRec = readAudit(auditPath).filter((r) => r.type === "exchange" && r.run === run);
    assert.ok(keptRec.length >= 2 && keptRec.every((r) => r.runbook_sha256 === oldSha), "records after the failed reload name the old runbook");

    const good = reloadRunbook("denied");
    replaceFile(file, good, tmp);
    const newSha = sha256(good);
    rw.child.kill("SIGHUP");
    let attempt = 10;
    const denied = await until(async () => {
      const r = await write(run, ++attempt);
      return r.status === 403 ? r : null;
    }, 5000);
    assert.ok(denied, "the good reload did not apply within 5 s");
    assert.equal(denied.json.error, "denied_by_runbook");
    assert.equal(denied.json.action, "write_echo");
    // The reload event is recorded once the reload is done (it counts the tunnels it
    // closed): a request judged by the new policy may be answered before it is written.
    const reloaded = await until(() => auditEvents("reload")
      .map((e) => ({ ...e, ...(e.fields ?? {}), ...(e.data ?? {}) }))
      .some((e) => e.runbooks?.reloadable === newSha), 5000);
    assert.ok(reloaded, "no reload event with the new sha");
    const last = readAudit(auditPath).filter((r) => r.type === "exchange" && r.run === run).at(-1);
    assert.equal(last.outcome, "denied");
    assert.equal(last.runbook_sha256, newSha);
    assert.notEqual(newSha, oldSha);
    assert.equal(arrived(`${run}&i=${attempt}`).length, 0, "the denied write reached the upstream");
  });

  test("reload: a runbook check would warn about is logged (runbook_warning) and still applies", async () => {
    assert.doesNotMatch(logs(), /runbook_warning/, "no runbook warned before");
    const file = path.join(dir, "runbooks", "reloadable.yaml");
    // write_echo is a POST: listed only under diagnostics it counts as read_only, which
    // lets a call with side effects pass even in read_only mode: check warns, and so does serve.
    replaceFile(file, `runbook: reloadable
owner: integration-tests
diagnostics: [write_echo]
allowed_actions:
  read_only: [read_echo]
unmatched: deny
`, tmp);
    rw.child.kill("SIGHUP");
    const warned = await until(() => /runbook_warning[^\n]*reloadable[^\n]*write_echo/.test(logs()), 5000);
    assert.ok(warned, `no runbook_warning in the serve log:\n${logs().slice(-2000)}`);
    const run = runId("diag");
    const r = await viaProxy("POST", `/echo/rl?m=${run}`, { run, runbook: "reloadable", body: '{"kind":"note"}' });
    assert.equal(r.status, 200, r.text);
    assert.equal(readAudit(auditPath).filter((x) => x.type === "exchange" && x.run === run).at(-1)?.class, "read_only");
  });

  test("reload: a redaction pattern added by SIGHUP hides a new secret format from every later record, same process", async () => {
    // No built-in rule matches the canary: before the reload it is in the audit log.
    const canary = "acme_live_" + crypto.randomBytes(8).toString("hex");
    const pid = rw.child.pid;
    const send = (run) => viaProxy("POST", `/echo/rd?m=${run}`, { run, body: JSON.stringify({ note: `saw ${canary}` }) });
    const before = runId("redact-before");
    assert.equal((await send(before)).status, 200);
    assert.ok(fs.readFileSync(auditPath, "utf8").includes(canary), "the canary must be logged before the rule exists");

    const config = path.join(dir, "runwarden.yaml");
    replaceFile(config, fs.readFileSync(config, "utf8") + 'redaction:\n  patterns: ["acme_live_[0-9a-f]{16}"]\n', tmp);
    const applied0 = auditEvents("reload").filter((e) => e.data?.redaction === "applied").length;
    rw.child.kill("SIGHUP");
    const applied = await until(() => auditEvents("reload").filter((e) => e.data?.redaction === "applied").length > applied0, 5000);
    assert.ok(applied, `no reload record with redaction applied:\n${logs().slice(-2000)}`);
    assert.match(logs(), /reloaded [^\n]*redaction=applied/);

    const after = runId("redact-after");
    assert.equal((await send(after)).status, 200);
    const records = await waitForExchanges(auditPath, after);
    assert.equal(records.length, 1);
    assert.match(records[0].request.body, /\[REDACTED:/);
    const text = fs.readFileSync(auditPath, "utf8");
    const reloadAt = text.lastIndexOf('"event":"reload"');
    assert.ok(reloadAt > 0 && !text.slice(reloadAt).includes(canary), "the canary is in a record written after the reload");
    assert.equal(rw.child.pid, pid, "runwarden restarted");
    assert.equal(rw.exited(), null, "runwarden exited");
  });

  test("SIGTERM: runwarden drains and exits 0", async () => {
    const result = await rw.stop("SIGTERM");
    assert.deepEqual(result, { code: 0, signal: null }, logs().slice(-3000));
  });

  test("kill-switch file present at start-up: the very first request is refused", async () => {
    fs.writeFileSync(killSwitch, "");
    rw = await serve({ dir, ports: [proxyPort, new URL(adminUrl).port | 0] });
    assert.ok(rw.child, `runwarden exited at start:\n${logs()}`);
    const run = runId("ks-start");
    const first = await viaProxy("GET", `/echo/ks-start?m=${run}`, { run });
    assert.equal(first.status, 503, first.text);
    assert.equal(first.json.error, "runwarden_paused");
    assert.equal(arrived(run).length, 0);
    fs.unlinkSync(killSwitch);
    const result = await rw.stop("SIGTERM");
    assert.deepEqual(result, { code: 0, signal: null }, logs().slice(-3000));
  });
});
