// One suite's world: a per-run PKI, three HTTPS upstreams (good, wrong name, untrusted CA)
// with plain HTTP beside the good one, and a real runwarden in front. Each request a test
// sends carries a fresh Runwarden-Run id and the outcome it must leave in the audit log.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { exchangesOf, readAudit } from "./audit.mjs";
import { makeTestPki } from "./pki.mjs";
import { startRunwarden } from "./runwarden.mjs";
import { startUpstream } from "./upstream.mjs";

/** The two suite-closing tests every proxy test file ends with. */
export function closingTests(test, getSuite) {
  test("audit: every request has exactly one exchange record with the right outcome", async () => {
    await getSuite().checkAudit();
  });
  test("SIGTERM: runwarden drains and exits 0", async () => {
    const result = await getSuite().stop();
    assert.deepEqual(result, { code: 0, signal: null }, getSuite().rw.logs().slice(-4000));
  });
}

export async function startSuite(name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `runwarden-it-${name}-`));
  const pki = makeTestPki(path.join(dir, "pki"));
  const upstream = await startUpstream({ tlsCert: pki.good, name: "good" });
  const wrongName = await startUpstream({ tlsCert: pki.wrongName, name: "wrong-name" });
  const untrusted = await startUpstream({ tlsCert: pki.untrusted, name: "untrusted" });
  const ports = [upstream.httpPort, upstream.httpsPort, wrongName.httpsPort, untrusted.httpsPort];
  let rw;
  try {
    rw = await startRunwarden({ trustBundle: pki.trustBundle, ports, dir: path.join(dir, "runwarden") });
  } catch (e) {
    await Promise.all([upstream.close(), wrongName.close(), untrusted.close()]);
    throw e;
  }
  const expected = new Map(); // run id -> outcome

  return {
    dir,
    pki,
    rw,
    upstream,
    wrongName,
    untrusted,
    /** A fresh run id whose single exchange record must have `outcome`. */
    run(label, outcome) {
      const id = `it-${label}-${crypto.randomBytes(5).toString("hex")}`;
      expected.set(id, outcome);
      return id;
    },
    /** Asserts the audit log holds exactly one exchange record per run, with its outcome
     *  (waiting, bounded, for records of exchanges a client abandoned mid-stream). */
    async checkAudit() {
      const deadline = Date.now() + 3000;
      const has = (run) => readAudit(rw.auditPath).some((r) => r.type === "exchange" && (r.run === run || String(r.request?.url ?? "").includes(run)));
      while (Date.now() < deadline && [...expected.keys()].some((run) => !has(run))) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const problems = [];
      for (const [run, outcome] of expected) {
        const recs = exchangesOf(rw.auditPath, run);
        if (recs.length === 0) {
          // A request refused before its headers were read has no run id; its URL still
          // carries the id (every test puts it in the query).
          recs.push(...readAudit(rw.auditPath).filter((r) => r.type === "exchange" && String(r.request?.url ?? "").includes(run)));
        }
        if (recs.length !== 1) problems.push(`${run}: ${recs.length} exchange records (want 1)`);
        else if (recs[0].outcome !== outcome) problems.push(`${run}: outcome ${recs[0].outcome} (want ${outcome})`);
      }
      assert.equal(expected.size > 0, true, "no run was registered");
      assert.deepEqual(problems, [], `audit problems:\n${problems.join("\n")}`);
      return expected.size;
    },
    async stop() {
      if (this.stopped) return this.stopped;
      const result = await rw.stop();
      this.stopped = result;
      await Promise.all([upstream.close(), wrongName.close(), untrusted.close()]);
      return result;
    },
    cleanup() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Asserts runwarden's DESIGN §4 denial body. */
export function assertDenied(res, body, { action } = {}) {
  assert.equal(res.status, 403, `want 403, got ${res.status}: ${JSON.stringify(body)}`);
  assert.match(res.contentType ?? res.headers?.get?.("content-type") ?? "", /application\/json/);
  const j = typeof body === "string" ? JSON.parse(body) : body;
  assert.equal(j.error, "denied_by_runbook");
  assert.equal(j.runbook, "integration");
  if (action !== undefined) assert.equal(j.action, action);
  assert.equal(typeof j.reason, "string");
  assert.ok(j.reason.length > 0, "reason is empty");
  assert.match(j.request_id, /\S+/);
  return j;
}
