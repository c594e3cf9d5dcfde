// Responses stream through runwarden as they arrive: SSE events reach the client while the
// upstream still holds the stream open; chunked and large bodies arrive whole and intact.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fetch } from "undici";
import { curl, proxyAgent } from "./lib/clients.mjs";
import { closingTests, startSuite } from "./lib/suite.mjs";
import { readAudit } from "./lib/audit.mjs";
import { largeBody } from "./lib/upstream.mjs";

const FIRST_EVENT_LIMIT_MS = 5000;

describe("streaming through runwarden", () => {
  let s;
  let agent;
  before(async () => {
    s = await startSuite("streaming");
    agent = proxyAgent(s.rw);
  });
  after(async () => {
    await agent?.close();
    if (s) { await s.stop(); s.cleanup(); }
  });

  async function firstEventWhileHeld(url, run) {
    const res = await fetch(url, { dispatcher: agent, headers: { "Runwarden-Run": run, accept: "text/event-stream" } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const reader = res.body.getReader();
    let text = "";
    const deadline = Date.now() + FIRST_EVENT_LIMIT_MS;
    while (!text.includes("\n\n") && Date.now() < deadline) {
      const next = await Promise.race([
        reader.read(),
        new Promise((r) => setTimeout(() => r({ timeout: true }), Math.max(1, deadline - Date.now()))),
      ]);
      if (next.timeout || next.done) break;
      text += Buffer.from(next.value).toString();
    }
    // The proof: the first event is here, and the upstream has sent only it and still holds.
    assert.match(text, /data: \{"n":1\}/, `first SSE event not delivered while the stream was open (got ${JSON.stringify(text)})`);
    assert.equal(s.upstream.state.sseOpen, true);
    assert.equal(s.upstream.state.sseEventsSent, 1);
    s.upstream.release();
    for (let i = 0; i < 1000; i++) {
      const { done, value } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    assert.equal((text.match(/^data: /gm) ?? []).length, 4);
    assert.match(text, /data: \{"n":4\}/);
  }

  test("SSE over intercepted HTTPS: first event arrives before the stream ends", async () => {
    const run = s.run("sse-https", "forwarded");
    await firstEventWhileHeld(`${s.upstream.httpsUrl}/sse?n=4&hold=1&delay=20&m=${run}`, run);
  });

  test("SSE over plain HTTP (curl -N, absolute-form): events arrive in order", async () => {
    const run = s.run("sse-http", "forwarded");
    const r = await curl(["-N", "--proxy", s.rw.proxyUrl, "-H", `Runwarden-Run: ${run}`,
      `${s.upstream.httpUrl}/sse?n=5&delay=30&m=${run}`]);
    assert.equal(r.status, 200, r.stderr);
    assert.deepEqual(r.body.match(/"n":\d/g), ['"n":1', '"n":2', '"n":3', '"n":4', '"n":5']);
  });

  test("chunked response passes through intact", async () => {
    const run = s.run("chunked", "forwarded");
    const res = await fetch(`${s.upstream.httpsUrl}/chunked?n=50&m=${run}`, { dispatcher: agent, headers: { "Runwarden-Run": run } });
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.equal(text, Array.from({ length: 50 }, (_, i) => `chunk ${i}\n`).join(""));
  });

  test("8 MiB download over intercepted HTTPS arrives byte-identical", async () => {
    const run = s.run("large", "forwarded");
    const bytes = 8 << 20;
    const res = await fetch(`${s.upstream.httpsUrl}/large?bytes=${bytes}&m=${run}`, { dispatcher: agent, headers: { "Runwarden-Run": run } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-length"), String(bytes));
    const got = Buffer.from(await res.arrayBuffer());
    assert.equal(got.length, bytes);
    const sha = (b) => crypto.createHash("sha256").update(b).digest("hex");
    assert.equal(sha(got), sha(largeBody(bytes)));
    // The record keeps an excerpt, and the digest of the whole download.
    let rec;
    for (let i = 0; i < 100 && !rec; i++) {
      rec = readAudit(s.rw.auditPath).find((x) => x.type === "exchange" && x.run === run);
      if (!rec) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(rec, "exchange record");
    assert.equal(rec.response.bytes, bytes);
    assert.equal(rec.response.truncated, true);
    assert.equal(rec.response.body_sha256, sha(largeBody(bytes)));
  });

  closingTests(test, () => s);
});
