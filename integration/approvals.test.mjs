// Holds and approvals end to end (DESIGN §4-§5, issue 5), real parts only: curl and the MCP
// SDK client as agents, the recording upstream, a local webhook receiver that verifies
// Runwarden-Signature, the real admin API and the real `runwarden approvals` CLI.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { fetch } from "undici";
import { readAudit } from "./lib/audit.mjs";
import { curl, proxyAgent } from "./lib/clients.mjs";
import { makeTestPki } from "./lib/pki.mjs";
import { freePort, runwardenBin } from "./lib/runwarden.mjs";
import { adminClient, initCa, serve, sha256, writeTokensFile } from "./lib/serve.mjs";
import { startUpstream } from "./lib/upstream.mjs";
import { signBody, startWebhookReceiver } from "./lib/webhook_receiver.mjs";

const SECRET = crypto.randomBytes(24).toString("hex");
const ALICE = crypto.randomBytes(16).toString("hex");
const BOB = crypto.randomBytes(16).toString("hex");
const CAROL = crypto.randomBytes(16).toString("hex"); // authenticated, but not an approver
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function policy(ports) {
  const on = `host: ["127.0.0.1", "localhost"], port: [${ports.join(", ")}]`;
  const catalogue = `actions:
  restart_http:
    - {method: POST, ${on}, path: "/restart"}
  quick_timeout:
    - {method: POST, ${on}, path: "/slow"}
  open_op:
    - {method: POST, ${on}, path: "/open"}
  locked_op:
    - {method: POST, ${on}, path: "/locked"}
  deferred_op:
    - {method: POST, ${on}, path: "/deferred"}
  read_echo:
    - {method: GET, ${on}, path: "/echo/**"}
  mcp_session:
    - {method: GET, ${on}, path: "/mcp"}
    - {method: POST, ${on}, path: "/mcp", jsonrpc: {method: [initialize, notifications/initialized, tools/list, ping]}}
  mcp_restart_service:
    - {method: POST, ${on}, path: "/mcp", mcp: {tool: restart_service}}
`;
  const runbook = `runbook: approvals
owner: integration-tests
trigger: {alert: integration_suite}
allowed_actions:
  read_only: [read_echo, mcp_session]
  approval_required:
    - action: restart_http
      risk: high
      effect: "the workers restart"
      rollback: "none needed"
      approvers: [payments-on-call, "webhook:127.0.0.1"]
      timeout: 60s
    - action: quick_timeout
      timeout: 1s
    - action: open_op
      timeout: 60s
    - action: locked_op
      approvers: [nobody-team]
      timeout: 60s
    - action: deferred_op
      wait: 1s
      timeout: 60s
    - action: mcp_restart_service
      risk: medium
      timeout: 60s
unmatched: deny
`;
  return { catalogue, runbook };
}

/** Writes the config tree once; start() may be called again on the same dir (restart). */
async function prepare(dir, upstream, trustBundle, webhookUrl) {
  fs.mkdirSync(path.join(dir, "runbooks"), { recursive: true });
  await initCa(dir);
  const { catalogue, runbook } = policy([upstream.httpPort, upstream.httpsPort]);
  fs.writeFileSync(path.join(dir, "actions.yaml"), catalogue);
  fs.writeFileSync(path.join(dir, "runbooks", "approvals.yaml"), runbook);
  writeTokensFile(path.join(dir, "tokens.txt"), [
    { name: "alice", token: ALICE, groups: ["sre", "payments-on-call"] },
    { name: "bob", token: BOB, groups: ["payments-on-call"] },
    { name: "carol", token: CAROL, groups: ["sre", "payments"] },
  ]);
  fs.writeFileSync(path.join(dir, "alice.token"), ALICE);
  fs.writeFileSync(path.join(dir, "carol.token"), CAROL);
  const proxyPort = await freePort();
  const adminPort = await freePort();
  fs.writeFileSync(path.join(dir, "runwarden.yaml"), `listen:
  proxy: 127.0.0.1:${proxyPort}
  admin: 127.0.0.1:${adminPort}
agent: {id: approvals-agent}
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: approvals
tls:
  ca_cert: certs/ca.pem
  ca_key: certs/ca.key
  upstream_trust: ${JSON.stringify(trustBundle)}
approvals:
  hold_timeout: 60s
  on_timeout: deny
  max_pending: 100
  webhooks: [{url: ${JSON.stringify(webhookUrl)}, secret_env: RW_IT_WEBHOOK_SECRET}]
  operator_tokens_file: tokens.txt
audit:
  path: audit/audit.jsonl
  fsync: always
kill_switch_file: KILL
threads: 2
`);
  return { dir, proxyPort, adminPort, adminUrl: `http://127.0.0.1:${adminPort}`,
    proxyUrl: `http://127.0.0.1:${proxyPort}`, auditPath: path.join(dir, "audit", "audit.jsonl"),
    caPem: fs.readFileSync(path.join(dir, "certs", "ca.pem"), "utf8") };
}

async function start(world, env = { RW_IT_WEBHOOK_SECRET: SECRET }) {
  return serve({ dir: world.dir, ports: [world.proxyPort, world.adminPort], env });
}

describe("holds and approvals", () => {
  let tmp, pki, upstream, hooks, world, rw, agent, mcp, admin;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "runwarden-it-approvals-"));
    pki = makeTestPki(path.join(tmp, "pki"));
    upstream = await startUpstream({ tlsCert: pki.good, name: "good" });
    hooks = await startWebhookReceiver({ secret: SECRET, failFirst: 1 });
    world = await prepare(path.join(tmp, "rw"), upstream, pki.trustBundle, hooks.url);
    rw = await start(world);
    assert.ok(rw.child, `runwarden exited at start: ${rw.logs?.()}`);
    agent = proxyAgent(world);
    admin = adminClient(world.adminUrl, ALICE);
  });
  after(async () => {
    await mcp?.close().catch(() => {});
    await agent?.close();
    await rw?.stop?.();
    await upstream?.close();
    await hooks?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const runId = (label) => `it-${label}-${crypto.randomBytes(5).toString("hex")}`;

  /** The pending hold of `run` (bounded wait). */
  async function pendingOf(run, limitMs = 8000) {
    const deadline = Date.now() + limitMs;
    while (Date.now() < deadline) {
      const r = await admin("GET", "/v1/approvals?state=pending");
      assert.equal(r.status, 200, r.text);
      const hit = r.json.approvals.find((a) => a.packet.run === run);
      if (hit) return hit;
      await sleep(25);
    }
    throw new Error(`no pending hold for ${run}`);
  }

  /** curl as the agent: POST through the proxy (runs in the background). */
  async function agentPost(p, run, body, extra = []) {
    const hdr = path.join(tmp, `h-${crypto.randomBytes(6).toString("hex")}`);
    const r = await curl(["--proxy", world.proxyUrl, "-H", `Runwarden-Run: ${run}`, "-H", "content-type: application/json",
      "-D", hdr, "--data-binary", body, ...extra, `${upstream.httpUrl}${p}?m=${run}`], { timeoutMs: 30000 });
    try { r.headers = fs.readFileSync(hdr, "utf8"); fs.unlinkSync(hdr); } catch { r.headers = ""; }
    return r;
  }

  const arrivals = (run) => upstream.requests.filter((r) => r.url.includes(run));
  const exchanges = (run) => readAudit(world.auditPath).filter((r) => r.type === "exchange" && r.run === run);
  const events = (name, id) => readAudit(world.auditPath).filter((r) => r.type === "event" && r.event === name && r.data?.approval_id === id);
  async function waitExchange(run, limitMs = 5000) {
    const deadline = Date.now() + limitMs;
    while (Date.now() < deadline) {
      const e = exchanges(run);
      if (e.length > 0) return e;
      await sleep(25);
    }
    return exchanges(run);
  }

  test("approve forwards exactly the held bytes once; audit, webhooks and idempotency", async () => {
    const run = runId("approve");
    const body = JSON.stringify({ workers: "payments", token: "sk_live_abcdefghijklmnopqrstuvwx" });
    const pending = agentPost("/restart", run, body);
    const hold = await pendingOf(run);
    assert.match(hold.id, /^apr_[0-9a-f]{32}$/);
    assert.equal(arrivals(run).length, 0, "nothing may arrive while held");
    const full = await admin("GET", `/v1/approvals/${hold.id}`);
    assert.equal(full.status, 200);
    assert.equal(full.json.packet.action, "restart_http");
    assert.equal(full.json.packet.risk, "high");
    assert.equal(full.json.packet.request.method, "POST");
    assert.equal(full.json.packet.request.body_sha256, sha256(body));
    assert.ok(!full.text.includes("sk_live_abcdefghijklmnopqrstuvwx"), "packet must be redacted");
    // approval.requested reached the receiver, signed (the first delivery was answered 500: retried).
    const req = await hooks.waitFor((d) => d.answered === 204 && d.event === "approval.requested" && d.json?.data?.id === hold.id);
    assert.ok(req, "approval.requested webhook not delivered");
    assert.equal(req.signatureOk, true);
    assert.equal(req.json.data.packet.request.body_sha256, sha256(body));

    const t0 = Date.now();
    const ok = await admin("POST", `/v1/approvals/${hold.id}/approve`, { body: JSON.stringify({ reason: "go", by: "mallory" }) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.state, "approved");
    assert.equal(ok.json.by, "alice", "the approver comes from the token, not the body");
    const res = await pending;
    assert.equal(res.status, 200, res.body);
    const got = arrivals(run);
    assert.equal(got.length, 1);
    assert.equal(got[0].body.toString("utf8"), body);
    assert.equal(got[0].headers["runwarden-run"], undefined);

    const again = await admin("POST", `/v1/approvals/${hold.id}/approve`);
    assert.equal(again.status, 200);
    assert.equal(again.json.changed, false);
    const conflict = await admin("POST", `/v1/approvals/${hold.id}/deny`, { token: BOB });
    assert.equal(conflict.status, 409);
    assert.equal((await admin("POST", "/v1/approvals/apr_00000000000000000000000000000000/approve")).status, 404);
    await sleep(200);
    assert.equal(arrivals(run).length, 1, "forwarded exactly once");

    const ex = await waitExchange(run);
    assert.equal(ex.length, 1);
    assert.equal(ex[0].outcome, "approved_forwarded");
    assert.equal(ex[0].approval.id, hold.id);
    assert.equal(ex[0].approval.by, "alice");
    assert.ok(ex[0].approval.wait_ms >= 0 && ex[0].approval.wait_ms <= Date.now() - t0 + 10000);
    assert.equal(events("approval.requested", hold.id).length, 1);
    const resolved = events("approval.resolved", hold.id);
    assert.equal(resolved.length, 1);
    assert.equal(resolved[0].data.by, "alice");
    assert.equal(typeof resolved[0].data.wait_ms, "number");
    const hook = await hooks.waitFor((d) => d.answered === 204 && d.event === "approval.resolved" && d.json?.data?.id === hold.id);
    assert.ok(hook && hook.signatureOk);
    assert.equal(hook.json.data.outcome, "approved");
    assert.ok(hooks.deliveries.some((d) => d.answered === 500), "the first delivery failed and was retried");
  });

  test("deny answers 403 approval_denied with the approval id and forwards nothing", async () => {
    const run = runId("deny");
    const pending = agentPost("/restart", run, "{\"a\":1}");
    const hold = await pendingOf(run);
    const r = await admin("POST", `/v1/approvals/${hold.id}/deny`, { token: BOB, body: JSON.stringify({ reason: "not now" }) });
    assert.equal(r.status, 200);
    assert.equal(r.json.by, "bob");
    const res = await pending;
    assert.equal(res.status, 403);
    const j = JSON.parse(res.body.slice(res.body.indexOf("{")));
    assert.equal(j.error, "approval_denied");
    assert.equal(j.approval_id, hold.id);
    assert.equal(arrivals(run).length, 0);
    const ex = await waitExchange(run);
    assert.equal(ex[0].outcome, "approval_denied");
    assert.equal(ex[0].approval.by, "bob");
  });

  test("approvers: an operator outside them gets 403 not_an_approver and nothing moves; a group member approves once", async () => {
    const run = runId("approvers");
    const body = JSON.stringify({ workers: "payments", n: 3 });
    const pending = agentPost("/restart", run, body);
    const hold = await pendingOf(run);
    assert.deepEqual(hold.packet.approvers, ["payments-on-call", "webhook:127.0.0.1"]);
    assert.equal(hold.packet.who_may_approve, "payments-on-call, webhook:127.0.0.1");
    // carol is authenticated (groups sre, payments) but neither named nor in payments-on-call.
    for (const verb of ["approve", "deny"]) {
      const r = await admin("POST", `/v1/approvals/${hold.id}/${verb}`, { token: CAROL, body: JSON.stringify({ reason: "mine" }) });
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.error, "not_an_approver");
      assert.equal(r.json.approval_id, hold.id);
      assert.deepEqual(r.json.approvers, ["payments-on-call", "webhook:127.0.0.1"]);
      assert.equal(r.json.by, "carol");
      assert.match(r.json.reason, /payments-on-call/);
    }
    // The CLI says why and exits non-zero.
    const cli = await new Promise((resolve) => execFile(runwardenBin(), ["approvals", "approve", hold.id, "--admin",
      world.adminUrl, "--token-file", path.join(world.dir, "carol.token")], { timeout: 20000 },
    (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr })));
    assert.equal(cli.code, 1, cli.stderr);
    assert.match(cli.stderr, /HTTP 403.*not_an_approver/);
    // Nothing changed, nothing was forwarded, nothing was announced as resolved.
    const still = await admin("GET", `/v1/approvals/${hold.id}`, { token: CAROL });
    assert.equal(still.status, 200, "carol may still read the packet");
    assert.equal(still.json.state, "pending");
    assert.equal(still.json.by, "");
    await sleep(200);
    assert.equal(arrivals(run).length, 0, "a refused decision forwarded the request");
    assert.equal(events("approval.resolved", hold.id).length, 0);
    const refused = events("approval.decision_refused", hold.id);
    assert.equal(refused.length, 3, "each refused attempt is an audit record");
    assert.deepEqual(refused.map((e) => e.data.choice).sort(), ["approve", "approve", "deny"]);
    for (const e of refused) {
      assert.equal(e.data.by, "carol");
      assert.equal(e.data.error, "not_an_approver");
      assert.deepEqual(e.data.approvers, ["payments-on-call", "webhook:127.0.0.1"]);
      assert.equal(e.data.run, run);
    }
    assert.match(rw.logs(), /approval_not_an_approver/, "the refusal is in the operational log");
    // An approvers list that no operator, group or webhook identity matches is warned at start-up.
    assert.match(rw.logs(), /approver_unknown.*nobody-team/);
    assert.match(rw.logs(), /approvers_unreachable.*locked_op/);
    assert.doesNotMatch(rw.logs(), /approver_unknown.*payments-on-call/);
    // bob is in payments-on-call: his approval releases the request exactly once.
    const ok = await admin("POST", `/v1/approvals/${hold.id}/approve`, { token: BOB, body: JSON.stringify({ reason: "on call" }) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.state, "approved");
    assert.equal(ok.json.by, "bob");
    const res = await pending;
    assert.equal(res.status, 200, res.body);
    // After the decision carol is still refused (403, not 200 or 409).
    assert.equal((await admin("POST", `/v1/approvals/${hold.id}/deny`, { token: CAROL })).status, 403);
    await sleep(200);
    const got = arrivals(run);
    assert.equal(got.length, 1, "forwarded exactly once");
    assert.equal(got[0].body.toString("utf8"), body);
    const ex = await waitExchange(run);
    assert.equal(ex.length, 1);
    assert.equal(ex[0].outcome, "approved_forwarded");
    assert.equal(ex[0].approval.by, "bob");
    const resolved = events("approval.resolved", hold.id);
    assert.equal(resolved.length, 1);
    assert.equal(resolved[0].data.by, "bob");
    assert.equal(resolved[0].data.state, "approved");
  });

  test("an action without approvers may be decided by any authenticated operator", async () => {
    const run = runId("anyone");
    const pending = agentPost("/open", run, "{\"any\":1}");
    const hold = await pendingOf(run);
    assert.deepEqual(hold.packet.approvers, []);
    assert.equal(hold.packet.who_may_approve, "any authenticated operator");
    const r = await admin("POST", `/v1/approvals/${hold.id}/approve`, { token: CAROL });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.by, "carol");
    assert.equal((await pending).status, 200);
    assert.equal(arrivals(run).length, 1);
  });

  test("timeout answers 403 approval_timeout and forwards nothing", async () => {
    const run = runId("timeout");
    const res = await agentPost("/slow", run, "{}");
    assert.equal(res.status, 403);
    const j = JSON.parse(res.body.slice(res.body.indexOf("{")));
    assert.equal(j.error, "approval_timeout");
    assert.match(j.approval_id, /^apr_/);
    const late = await admin("POST", `/v1/approvals/${j.approval_id}/approve`);
    assert.equal(late.status, 409, "an expired hold cannot be approved");
    assert.equal(arrivals(run).length, 0);
    assert.equal((await waitExchange(run))[0].outcome, "approval_timeout");
  });

  test("kill: POST /v1/runs/{run}/kill denies the run's holds; nothing forwarded", async () => {
    const run = runId("kill");
    const pending = agentPost("/restart", run, "{\"k\":1}");
    const hold = await pendingOf(run);
    const k = await admin("POST", `/v1/runs/${run}/kill`);
    assert.equal(k.status, 200, k.text);
    const res = await pending;
    assert.equal(res.status, 403);
    assert.equal(JSON.parse(res.body.slice(res.body.indexOf("{"))).error, "approval_denied");
    assert.equal((await admin("GET", `/v1/approvals/${hold.id}`)).json.state, "killed");
    assert.equal(arrivals(run).length, 0);
  });

  // The gate looks for the file every 50 ms, the reloader every 250 ms: whichever sees it
  // first, the pause is one mode_changed event by the kill switch that counts the holds it
  // denied, and the holds name it. Before, the gate usually won and ended them as
  // "mode:paused" while the event said holds_denied 0 (3 rounds in 5).
  test("kill-switch file with holds pending: one event counting them, each hold ended by the switch", async () => {
    const killFile = path.join(world.dir, "KILL");
    for (let round = 0; round < 3; round++) {
      const runs = [0, 1, 2].map((i) => runId(`ks${round}-${i}`));
      const pendings = runs.map((r, i) => agentPost("/restart", r, `{"ks":${i}}`));
      const holds = [];
      for (const r of runs) holds.push(await pendingOf(r));
      const before = readAudit(world.auditPath).length;
      fs.writeFileSync(killFile, "");
      try {
        for (const p of pendings) assert.equal((await p).status, 403);
        let change;
        for (let i = 0; i < 100 && !change; i++) {
          change = readAudit(world.auditPath).slice(before)
            .find((r) => r.type === "event" && r.event === "mode_changed" && r.data?.to === "paused");
          if (!change) await sleep(50);
        }
        assert.ok(change, `round ${round}: no mode_changed event`);
        assert.equal(change.data.via, "kill_switch_file");
        assert.equal(change.data.holds_denied, 3, `round ${round}: ${JSON.stringify(change.data)}`);
        for (const h of holds) {
          const ended = events("approval.resolved", h.id);
          assert.equal(ended.length, 1);
          assert.equal(ended[0].data.by, "kill_switch_file", `round ${round}: ${JSON.stringify(ended[0].data)}`);
        }
      } finally {
        fs.rmSync(killFile, { force: true }); // a failure must not leave the rest of the suite paused
      }
      let resumed = false;
      for (let i = 0; i < 100 && !resumed; i++) {
        resumed = (await admin("GET", "/v1/status")).json?.mode === "normal";
        if (!resumed) await sleep(50);
      }
      assert.ok(resumed, "removing the file did not resume");
      for (const r of runs) assert.equal(arrivals(r).length, 0);
    }
  });

  test("read_only entered while held: a later approval releases nothing (paused ends the hold at once)", async () => {
    try {
      const run = runId("mode-read-only");
      const pending = agentPost("/restart", run, "{\"m\":1}");
      const hold = await pendingOf(run);
      const m = await admin("POST", "/v1/mode", { body: JSON.stringify({ mode: "read_only" }) });
      assert.equal(m.status, 200, m.text);
      const ok = await admin("POST", `/v1/approvals/${hold.id}/approve`);
      assert.equal(ok.status, 200, ok.text);
      const res = await pending;
      assert.equal(res.status, 403, res.body);
      const j = JSON.parse(res.body.slice(res.body.indexOf("{")));
      assert.equal(j.error, "denied_by_runbook", res.body);
      assert.equal(j.code, "read_only_mode", res.body);
      assert.equal(j.approval_id, hold.id);
      await sleep(100);
      assert.equal(arrivals(run).length, 0, "nothing may be forwarded");
      const ex = await waitExchange(run);
      assert.equal(ex.length, 1);
      assert.equal(ex[0].outcome, "denied");
      assert.equal(ex[0].approval.id, hold.id);

      // Paused: entering it ends the pending hold; approving afterwards changes nothing.
      assert.equal((await admin("POST", "/v1/mode", { body: JSON.stringify({ mode: "normal" }) })).status, 200);
      const run2 = runId("mode-paused");
      const pending2 = agentPost("/restart", run2, "{\"m\":2}");
      const hold2 = await pendingOf(run2);
      assert.equal((await admin("POST", "/v1/mode", { body: JSON.stringify({ mode: "paused" }) })).status, 200);
      assert.equal((await admin("POST", `/v1/approvals/${hold2.id}/approve`)).status, 409);
      const res2 = await pending2;
      assert.notEqual(res2.status, 200, res2.body);
      await sleep(100);
      assert.equal(arrivals(run2).length, 0, "nothing may be forwarded");
    } finally {
      await admin("POST", "/v1/mode", { body: JSON.stringify({ mode: "normal" }) }).catch(() => {});
    }
  });

  test("client disconnect abandons the hold: a later approve is 409 and nothing is forwarded", async () => {
    const run = runId("gone");
    // curl gives up after 5 s: long enough for the hold to be listed as pending first, even
    // on a slow sanitizer build (with 1 s it could be abandoned before pendingOf saw it).
    const pending = agentPost("/restart", run, "{\"g\":1}", ["--max-time", "5"]);
    const hold = await pendingOf(run);
    await pending; // curl gave up and closed its connection
    const deadline = Date.now() + 5000;
    let state = "pending";
    while (Date.now() < deadline && state === "pending") {
      state = (await admin("GET", `/v1/approvals/${hold.id}`)).json.state;
      await sleep(25);
    }
    assert.equal(state, "abandoned");
    assert.equal((await admin("POST", `/v1/approvals/${hold.id}/approve`)).status, 409);
    await sleep(200);
    assert.equal(arrivals(run).length, 0);
    const ex = await waitExchange(run);
    assert.equal(ex.length, 1);
    assert.equal(ex[0].outcome, "client_gone");
  });

  test("hold-then-defer: approval_pending + Retry-After, then one grant for the same payload only", async () => {
    const run = runId("defer");
    const body = "{\"op\":\"drain\"}";
    const first = await agentPost("/deferred", run, body);
    assert.equal(first.status, 403);
    assert.match(first.headers, /retry-after: \d+/i);
    const j = JSON.parse(first.body.slice(first.body.indexOf("{")));
    assert.equal(j.error, "approval_pending");
    const id = j.approval_id;
    // Retried before approval: the same hold, not a second one.
    const retry = await agentPost("/deferred", run, body);
    assert.equal(JSON.parse(retry.body.slice(retry.body.indexOf("{"))).approval_id, id);
    assert.equal((await admin("POST", `/v1/approvals/${id}/approve`)).status, 200);
    // A different payload does not use the grant (it is held anew and deferred).
    const other = await agentPost("/deferred", run, "{\"op\":\"delete\"}");
    assert.equal(other.status, 403);
    assert.notEqual(JSON.parse(other.body.slice(other.body.indexOf("{"))).approval_id, id);
    // Another run with the same payload does not use it either.
    const otherRun = runId("defer-other");
    const stranger = await agentPost("/deferred", otherRun, body);
    assert.equal(stranger.status, 403);
    // The same run and payload passes once.
    const ok = await agentPost("/deferred", run, body);
    assert.equal(ok.status, 200, ok.body);
    const twice = await agentPost("/deferred", run, body);
    assert.equal(twice.status, 403, "a grant is single-use");
    const arrived = arrivals(run);
    assert.equal(arrived.length, 1);
    assert.equal(arrived[0].body.toString("utf8"), body);
    assert.equal(arrivals(otherRun).length, 0);
    assert.ok(exchanges(run).some((e) => e.outcome === "approved_forwarded" && e.approval?.id === id));
  });

  test("approve and deny racing from many clients: one outcome, at most one forward", async () => {
    for (let round = 0; round < 3; round++) {
      const run = runId(`race${round}`);
      const pending = agentPost("/restart", run, `{"r":${round}}`);
      const hold = await pendingOf(run);
      const calls = [];
      for (let i = 0; i < 24; i++) {
        const verb = i % 2 === 0 ? "approve" : "deny";
        calls.push(admin("POST", `/v1/approvals/${hold.id}/${verb}`, { token: i % 3 === 0 ? BOB : ALICE }).then((r) => ({ verb, ...r })));
      }
      const results = await Promise.all(calls);
      const changed = results.filter((r) => r.status === 200 && r.json.changed === true);
      assert.equal(changed.length, 1, "exactly one decision changed the hold");
      const winner = changed[0].verb;
      for (const r of results) {
        assert.equal(r.status, r.verb === winner ? 200 : 409, JSON.stringify(r));
      }
      const res = await pending;
      await sleep(100);
      assert.equal(arrivals(run).length, winner === "approve" ? 1 : 0);
      assert.equal(res.status, winner === "approve" ? 200 : 403);
    }
  });

  test("forged, stale, replayed, missing signatures and bad tokens: 401 and nothing changes", async () => {
    const run = runId("auth");
    const pending = agentPost("/restart", run, "{\"s\":1}");
    const hold = await pendingOf(run);
    const body = JSON.stringify({ reason: "signed" });
    const post = (headers, b = body) => admin("POST", `/v1/approvals/${hold.id}/approve`, { token: null, body: b, headers });
    const cases = {
      missing: await post({}),
      badToken: await admin("POST", `/v1/approvals/${hold.id}/approve`, { token: "not-a-token" }),
      forged: await post({ "runwarden-signature": signBody("wrong-secret", body) }),
      stale: await post({ "runwarden-signature": signBody(SECRET, body, Math.floor(Date.now() / 1000) - 600) }),
      otherBody: await post({ "runwarden-signature": signBody(SECRET, "{}") }),
    };
    for (const [name, r] of Object.entries(cases)) assert.equal(r.status, 401, `${name}: ${r.text}`);
    assert.equal((await admin("GET", "/v1/approvals?state=pending", { token: null })).status, 401);
    assert.equal((await admin("GET", `/v1/approvals/${hold.id}`)).json.state, "pending", "nothing changed");
    // A valid signature decides (as the webhook key) once; replaying it elsewhere is refused.
    const sig = signBody(SECRET, body);
    const run2 = runId("auth2");
    const pending2 = agentPost("/restart", run2, "{\"s\":2}");
    const hold2 = await pendingOf(run2);
    const good = await admin("POST", `/v1/approvals/${hold2.id}/deny`, { token: null, body, headers: { "runwarden-signature": sig } });
    assert.equal(good.status, 200, good.text);
    assert.equal(good.json.by, "webhook:127.0.0.1");
    const replay = await post({ "runwarden-signature": sig });
    assert.equal(replay.status, 401);
    assert.equal(replay.json.reason, "signature_replayed");
    assert.equal((await admin("GET", `/v1/approvals/${hold.id}`)).json.state, "pending", "nothing changed");
    await admin("POST", `/v1/approvals/${hold.id}/deny`);
    assert.equal((await pending).status, 403);
    assert.equal((await pending2).status, 403);
    assert.equal(arrivals(run).length + arrivals(run2).length, 0);
  });

  // Outbound and inbound calls share the secret and the signature format: a delivery seen
  // by a receiver's log or a relay must not work as a credential (runwarden spends each
  // signature it sends). Before: the approval.requested delivery of one hold approved another.
  test("a captured webhook delivery replayed to the admin API is refused; the hold stays pending", async () => {
    const runA = runId("hookA");
    const runB = runId("hookB");
    const pendingA = agentPost("/restart", runA, "{\"h\":1}");
    const holdA = await pendingOf(runA);
    const pendingB = agentPost("/restart", runB, "{\"h\":2}");
    const holdB = await pendingOf(runB);
    const hook = await hooks.waitFor((d) => d.event === "approval.requested" && d.json?.data?.id === holdA.id);
    assert.ok(hook && hook.signatureOk, "the delivery was signed correctly");
    const headers = { "runwarden-signature": hook.signature, "content-type": "application/json" };
    const approveB = await admin("POST", `/v1/approvals/${holdB.id}/approve`, { token: null, body: hook.body, headers });
    assert.equal(approveB.status, 401, approveB.text);
    assert.equal(approveB.json.reason, "signature_replayed");
    // A GET carrying the delivery's body (fetch sends none with GET: node:http does).
    const listStatus = await new Promise((resolve, reject) => {
      const req = http.request(`${world.adminUrl}/v1/approvals?state=all`, {
        method: "GET", headers: { ...headers, "content-length": Buffer.byteLength(hook.body) },
      }, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)); });
      req.on("error", reject);
      req.end(hook.body);
    });
    assert.equal(listStatus, 401, "nor does it list the packets");
    const mode = await admin("POST", "/v1/mode", { token: null, body: hook.body, headers });
    assert.equal(mode.status, 401, mode.text);
    assert.equal((await admin("GET", `/v1/approvals/${holdB.id}`)).json.state, "pending", "nothing changed");
    // A call signed afresh by the secret's holder still works, on the operations routes too.
    const sig = (b) => ({ "runwarden-signature": signBody(SECRET, b) });
    const ro = JSON.stringify({ mode: "read_only" });
    const toRo = await admin("POST", "/v1/mode", { token: null, body: ro, headers: sig(ro) });
    assert.equal(toRo.status, 200, toRo.text);
    assert.equal(toRo.json.mode, "read_only");
    const back = JSON.stringify({ mode: "normal" });
    assert.equal((await admin("POST", "/v1/mode", { token: null, body: back, headers: sig(back) })).status, 200);
    // Unknown keys are refused, not ignored: a webhook envelope is no decision body.
    const envelope = await admin("POST", `/v1/approvals/${holdB.id}/approve`, { body: hook.body });
    assert.equal(envelope.status, 400, envelope.text);
    assert.match(envelope.json.reason, /unknown key/);
    const dup = await admin("POST", "/v1/mode", { body: '{"mode":"paused","mode":"normal"}' });
    assert.equal(dup.status, 400, dup.text);
    await admin("POST", `/v1/approvals/${holdA.id}/deny`);
    await admin("POST", `/v1/approvals/${holdB.id}/deny`);
    assert.equal((await pendingA).status, 403);
    assert.equal((await pendingB).status, 403);
    assert.equal(arrivals(runA).length + arrivals(runB).length, 0);
  });

  test("MCP SDK client: a held tools/call completes after approval and fails with approval_denied after denial", async () => {
    const run = runId("mcp");
    const mcpFetch = (url, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set("Runwarden-Run", run);
      return fetch(url, { ...init, headers, dispatcher: agent });
    };
    mcp = new Client({ name: "approvals-agent", version: "1.0.0" });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(`${upstream.httpsUrl}/mcp`), { fetch: mcpFetch }));
    const before = upstream.mcpCalls.length;
    const call = mcp.callTool({ name: "restart_service", arguments: { service: "payments" } });
    const hold = await pendingOf(run);
    assert.equal(hold.packet.action, "mcp_restart_service");
    assert.equal((await admin("POST", `/v1/approvals/${hold.id}/approve`)).status, 200);
    const r = await call;
    assert.notEqual(r.isError, true, JSON.stringify(r));
    assert.equal(upstream.mcpCalls.length, before + 1);

    const denied = mcp.callTool({ name: "restart_service", arguments: { service: "billing" } }).then(
      (v) => ({ v }), (e) => ({ e }));
    let hold2;
    const deadline = Date.now() + 8000;
    while (!hold2 && Date.now() < deadline) {
      const l = await admin("GET", "/v1/approvals?state=pending");
      hold2 = l.json.approvals.find((a) => a.packet.run === run);
      if (!hold2) await sleep(25);
    }
    assert.ok(hold2);
    assert.equal((await admin("POST", `/v1/approvals/${hold2.id}/deny`)).status, 200);
    const out = await denied;
    const text = out.e ? String(out.e.message) : JSON.stringify(out.v);
    assert.match(text, /approval_denied/);
    assert.match(text, new RegExp(hold2.id));
    assert.equal(upstream.mcpCalls.length, before + 1, "the denied call never reached the server");
  });

  test("runwarden approvals list|approve (CLI) against the live admin API", async () => {
    const run = runId("cli");
    const pending = agentPost("/restart", run, "{\"c\":1}");
    const hold = await pendingOf(run);
    const cli = (args) => new Promise((resolve) => execFile(runwardenBin(), ["approvals", ...args, "--admin", world.adminUrl,
      "--token-file", path.join(world.dir, "alice.token")], { timeout: 20000 }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr })));
    const list = await cli(["list", "--json"]);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(JSON.parse(list.stdout).approvals.some((a) => a.id === hold.id));
    const table = await cli(["list"]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout.split("\n")[0], /APPROVERS/);
    assert.match(table.stdout.split("\n").find((l) => l.startsWith(hold.id)), /payments-on-call, webhook:127\.0\.0\.1/);
    const show = await cli(["show", hold.id]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^may approve\s+payments-on-call, webhook:127\.0\.0\.1$/m);
    const ok = await cli(["approve", hold.id, "--reason", "cli"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await pending).status, 200);
    assert.equal(arrivals(run).length, 1);
    // ctl kill of a mistyped run: killed (a run yet to start is covered) but exit 3, and the
    // warning names the run that does exist.
    const ctl = (args) => new Promise((resolve) => execFile(runwardenBin(), ["ctl", ...args, "--admin", world.adminUrl,
      "--token-file", path.join(world.dir, "alice.token")], { timeout: 20000 }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr })));
    const typo = `${run}x`;
    const killed = await ctl(["kill", typo, "--reason", "typo test"]);
    assert.equal(killed.code, 3, killed.stderr);
    assert.match(killed.stderr, /had seen no call of run/);
    assert.ok(killed.stderr.includes(`runs with similar ids:\n  ${run}\n`), killed.stderr);
    const real = await ctl(["kill", run]);
    assert.equal(real.code, 0, real.stderr);
  });

  test("restart with a pending hold releases nothing and records the expiry", async () => {
    const run = runId("restart");
    const pending = agentPost("/restart", run, "{\"x\":\"restart\"}");
    const hold = await pendingOf(run);
    await rw.stop("SIGKILL");
    const res = await pending;
    assert.notEqual(res.status, 200);
    rw = await start(world);
    assert.ok(rw.child, `runwarden did not restart: ${rw.logs?.()}`);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && events("approval.expired_on_restart", hold.id).length === 0) await sleep(25);
    const ev = events("approval.expired_on_restart", hold.id);
    assert.equal(ev.length, 1);
    assert.equal(ev[0].data.run, run);
    // The operator following the old webhook link sees that it expired, not "not found",
    // and approving it now is a conflict: nothing can release it.
    const shown = await admin("GET", `/v1/approvals/${hold.id}`);
    assert.equal(shown.status, 200, shown.text);
    assert.equal(shown.json.state, "expired");
    assert.equal(shown.json.by, "restart");
    assert.equal(shown.json.run, run);
    const late = await admin("POST", `/v1/approvals/${hold.id}/approve`);
    assert.equal(late.status, 409, late.text);
    assert.equal(late.json.approval.state, "expired");
    assert.equal((await admin("GET", "/v1/approvals/apr_no_such_hold")).status, 404);
    await sleep(300);
    assert.equal(arrivals(run).length, 0, "nothing was released by the restart");
    const journal = fs.readFileSync(path.join(world.dir, "audit", "approvals.journal.prev"), "utf8");
    assert.match(journal, new RegExp(`"expired_on_restart".*${hold.id}|${hold.id}.*"expired_on_restart"`));
  });

  test("a webhook whose secret_env is unset is a start-up error", async () => {
    const child = spawn(runwardenBin(), ["serve", "-c", path.join(world.dir, "runwarden.yaml")],
      { cwd: world.dir, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH } });
    let err = "";
    child.stderr.on("data", (c) => { err += c; });
    child.stdout.on("data", (c) => { err += c; });
    const t = setTimeout(() => child.kill("SIGKILL"), 15000);
    const code = await new Promise((r) => child.once("exit", (c) => r(c)));
    clearTimeout(t);
    assert.notEqual(code, 0, "runwarden must refuse to start");
    assert.equal(code !== null, true, "it exited by itself");
    assert.match(err, /RW_IT_WEBHOOK_SECRET/);
  });

  test("SIGTERM with a hold pending: 503 approval_shutdown, one record, the approval's end announced, exit 0", async () => {
    const run = runId("shutdown");
    const pending = agentPost("/open", run, "{\"x\":\"shutdown\"}");
    const hold = await pendingOf(run);
    const stopped = rw.stop("SIGTERM");
    const res = await pending;
    assert.deepEqual(await stopped, { code: 0, signal: null });
    assert.match(rw.logs(), /holds_ended_at_shutdown holds=1/);
    assert.match(rw.logs(), /drained in_flight=0 held=0 .*clean=yes/);
    // The agent (curl) got an answer it can act on, naming the approval.
    assert.equal(res.exitCode, 0, res.stderr);
    assert.equal(res.status, 503);
    assert.match(res.contentType, /application\/json/);
    const body = JSON.parse(res.body);
    assert.equal(body.error, "approval_shutdown");
    assert.equal(body.approval_id, hold.id);
    assert.match(body.reason, /shutting down/);
    assert.ok(body.reason.includes(hold.id), body.reason);
    // Exactly one record for the request, and the approval's end as an event and a webhook.
    const recs = exchanges(run);
    assert.equal(recs.length, 1);
    assert.equal(recs[0].outcome, "approval_shutdown");
    assert.equal(recs[0].approval?.id, hold.id);
    assert.equal(recs[0].response?.status, 503);
    const resolved = events("approval.resolved", hold.id);
    assert.equal(resolved.length, 1);
    assert.equal(resolved[0].data.state, "expired");
    assert.equal(resolved[0].data.by, "shutdown");
    assert.equal(resolved[0].data.outcome, "approval_shutdown");
    const hook = hooks.accepted("approval.resolved", hold.id);
    assert.equal(hook.length, 1, "the drain waits for the approval.resolved webhook");
    assert.equal(hook[0].json.data.outcome, "expired");
    assert.equal(hook[0].json.data.by, "shutdown");
    assert.equal(arrivals(run).length, 0, "nothing held reaches the upstream");
  });
});
