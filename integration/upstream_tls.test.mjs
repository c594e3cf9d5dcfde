// runwarden verifies upstreams: a certificate from a CA outside tls.upstream_trust, or one
// for another name, gives 502 and the upstream receives no request.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fetch } from "undici";
import { curl, proxyAgent } from "./lib/clients.mjs";
import { closingTests, startSuite } from "./lib/suite.mjs";

/**
 * The status the agent sees for a request to `url`: runwarden may find the upstream bad when it
 * forwards the inner request (a 502 response) or already while answering CONNECT (a 502
 * there, which undici reports as a tunnel error). Either is the 502 DESIGN §4 promises.
 */
async function statusVia(agent, url, run) {
  try {
    const res = await fetch(url, { dispatcher: agent, headers: { "Runwarden-Run": run } });
    await res.arrayBuffer();
    return res.status;
  } catch (e) {
    const m = String(e?.cause?.message ?? e?.message).match(/Proxy response \((\d{3})\)/);
    if (m) return Number(m[1]);
    throw e;
  }
}

describe("upstream TLS verification", () => {
  let s;
  let agent;
  before(async () => {
    s = await startSuite("upstream-tls");
    agent = proxyAgent(s.rw);
  });
  after(async () => {
    await agent?.close();
    if (s) { await s.stop(); s.cleanup(); }
  });

  test("trusted upstream works (control)", async () => {
    const run = s.run("tls-good", "forwarded");
    const res = await fetch(`${s.upstream.httpsUrl}/echo?m=${run}`, { dispatcher: agent, headers: { "Runwarden-Run": run } });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  });

  test("untrusted CA: 502 and no request reaches the upstream", async () => {
    const run = s.run("tls-untrusted", "upstream_error");
    assert.equal(await statusVia(agent, `${s.untrusted.httpsUrl}/echo?m=${run}`, run), 502);
    assert.equal(s.untrusted.requests.length, 0);
  });

  test("wrong name: 502 and no request reaches the upstream", async () => {
    const run = s.run("tls-wrong-name", "upstream_error");
    assert.equal(await statusVia(agent, `${s.wrongName.httpsUrl}/echo?m=${run}`, run), 502);
    assert.equal(s.wrongName.requests.length, 0);
  });

  test("same through curl: 502 for the untrusted upstream", async () => {
    const run = s.run("tls-untrusted-curl", "upstream_error");
    const r = await curl(["--proxy", s.rw.proxyUrl, "--cacert", s.rw.caPath, "-H", `Runwarden-Run: ${run}`,
      `${s.untrusted.httpsUrl}/echo?m=${run}`]);
    assert.ok(r.status === 502 || r.connectStatus === 502, `want 502: ${JSON.stringify(r)}`);
    assert.equal(s.untrusted.requests.length, 0);
  });

  closingTests(test, () => s);
});
