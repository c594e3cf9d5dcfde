// Node's fetch engine (undici) through runwarden with a ProxyAgent that trusts only
// runwarden's CA: what an agent written in JavaScript does.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fetch } from "undici";
import { proxyAgent } from "./lib/clients.mjs";
import { assertDenied, closingTests, startSuite } from "./lib/suite.mjs";

describe("undici fetch through runwarden", () => {
  let s;
  let agent;
  before(async () => {
    s = await startSuite("fetch");
    agent = proxyAgent(s.rw);
  });
  after(async () => {
    await agent?.close();
    if (s) { await s.stop(); s.cleanup(); }
  });

  const go = (run, pathAndQuery, init = {}) => fetch(`${s.upstream.httpsUrl}${pathAndQuery}`, {
    ...init, dispatcher: agent, headers: { "Runwarden-Run": run, ...(init.headers ?? {}) },
  });

  test("allowed POST: JSON body and headers arrive unchanged in meaning; traceparent passes", async () => {
    const run = s.run("fetch-post", "forwarded");
    const payload = { kind: "refund", amount: 1200, note: "café ☕", nested: { a: [1, 2, 3] } };
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const res = await go(run, `/echo?m=${run}`, {
      method: "POST", body: JSON.stringify(payload),
      headers: { "content-type": "application/json", traceparent, "x-agent-step": "7" },
    });
    assert.equal(res.status, 200, await res.clone().text());
    const j = await res.json();
    assert.deepEqual(JSON.parse(j.body), payload);
    const seen = s.upstream.seen(`/echo?m=${run}`);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].headers.traceparent, traceparent);
    assert.equal(seen[0].headers["x-agent-step"], "7");
    assert.equal(seen[0].headers["content-type"], "application/json");
    assert.equal(seen[0].headers["runwarden-run"], undefined);
  });

  test("denied: 403 JSON with runbook, action, reason and request_id; nothing arrives", async () => {
    const run = s.run("fetch-denied", "denied");
    const res = await go(run, `/denied/secrets?m=${run}`);
    const body = await res.json();
    assertDenied({ status: res.status, contentType: res.headers.get("content-type") }, body, { action: "forbidden_area" });
    assert.equal(s.upstream.seen(`/denied/secrets?m=${run}`).length, 0);
  });

  test("keep-alive: each request on one connection is decided on its own", async () => {
    const a = s.run("fetch-ka-a", "forwarded");
    const b = s.run("fetch-ka-b", "denied");
    const c = s.run("fetch-ka-c", "forwarded");
    const ra = await go(a, `/echo?m=${a}`);
    assert.equal(ra.status, 200);
    await ra.arrayBuffer();
    const rb = await go(b, `/echo/x?m=${b}`, { method: "DELETE" });
    assert.equal(rb.status, 403);
    await rb.arrayBuffer();
    const rc = await go(c, `/echo?m=${c}`);
    assert.equal(rc.status, 200);
    await rc.arrayBuffer();
    assert.equal(s.upstream.seen(`/echo?m=${a}`).length, 1);
    assert.equal(s.upstream.seen(`/echo/x?m=${b}`).length, 0);
    assert.equal(s.upstream.seen(`/echo?m=${c}`).length, 1);
  });

  test("upstream status codes pass through (a 404 from the tool is not runwarden's)", async () => {
    const run = s.run("fetch-404", "forwarded");
    const res = await go(run, `/echo/status/404?m=${run}`);
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("x-upstream"), "good");
    assert.equal(JSON.parse(await res.text()).url, `/echo/status/404?m=${run}`);
  });

  test("a streamed (chunked) upload of 2.5 MiB, over the inspect limit, with no rule reading it, arrives whole", async () => {
    const run = s.run("fetch-chunked-upload", "forwarded");
    const parts = Array.from({ length: 40 }, () => crypto.randomBytes(64 * 1024));
    const whole = Buffer.concat(parts);
    const stream = new ReadableStream({
      pull(controller) {
        const next = parts.shift();
        if (next) controller.enqueue(next); else controller.close();
      },
    });
    const res = await go(run, `/upload/stream?m=${run}`, { method: "PUT", body: stream, duplex: "half" });
    assert.equal(res.status, 200, (await res.clone().text()).slice(0, 300));
    await res.arrayBuffer();
    const seen = s.upstream.seen(`/upload/stream?m=${run}`);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].headers["transfer-encoding"], "chunked");
    assert.equal(seen[0].body.length, whole.length);
    assert.ok(seen[0].body.equals(whole), "the body arrived changed");
  });

  closingTests(test, () => s);
});
