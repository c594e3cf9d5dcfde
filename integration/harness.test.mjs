// The harness's own parts, checked without runwarden: the per-run PKI, the recording
// upstream (HTTP and HTTPS, SSE hold, chunked, large), and the MCP SDK server with the SDK
// client talking to it directly. If these are wrong, every proxy test would be meaningless.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Agent, fetch } from "undici";
import { makeTestPki } from "./lib/pki.mjs";
import { largeBody, startUpstream } from "./lib/upstream.mjs";

describe("harness (no proxy)", () => {
  let dir;
  let pki;
  let up;
  let agent;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "runwarden-it-harness-"));
    pki = makeTestPki(path.join(dir, "pki"));
    up = await startUpstream({ tlsCert: pki.good, name: "good" });
    agent = new Agent({ connect: { ca: fs.readFileSync(pki.trustBundle, "utf8") } });
  });
  after(async () => {
    await agent.close();
    await up.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("test PKI: good and wrong-name certs chain to the trusted CA, the rogue one does not", () => {
    const verify = (certPath) => {
      try {
        execFileSync("openssl", ["verify", "-CAfile", pki.trustBundle, certPath], { stdio: "pipe" });
        return true;
      } catch {
        return false;
      }
    };
    assert.equal(verify(pki.good.certPath), true);
    assert.equal(verify(pki.wrongName.certPath), true);
    assert.equal(verify(pki.untrusted.certPath), false);
    const good = new crypto.X509Certificate(pki.good.cert);
    assert.match(good.subjectAltName, /DNS:localhost/);
    assert.match(good.subjectAltName, /IP Address:127\.0\.0\.1/);
    assert.equal(good.checkHost("localhost"), "localhost");
    assert.equal(new crypto.X509Certificate(pki.wrongName.cert).checkHost("localhost"), undefined);
  });

  test("upstream records method, url, headers and body over HTTPS and plain HTTP", async () => {
    const res = await fetch(`${up.httpsUrl}/echo?x=1`, {
      method: "POST", dispatcher: agent, body: '{"kind":"note"}',
      headers: { "content-type": "application/json", "x-test": "a" },
    });
    assert.equal(res.status, 200);
    const j = await res.json();
    assert.equal(j.scheme, "https");
    assert.equal(j.body, '{"kind":"note"}');
    const plain = await fetch(`${up.httpUrl}/echo/plain`);
    assert.equal((await plain.json()).scheme, "http");
    const rec = up.seen("/echo?x=1");
    assert.equal(rec.length, 1);
    assert.equal(rec[0].method, "POST");
    assert.equal(rec[0].headers["x-test"], "a");
    assert.equal(rec[0].body.toString(), '{"kind":"note"}');
    assert.equal(up.seen("/echo/plain").length, 1);
  });

  test("upstream rejects clients that do not trust the rogue CA (sanity for the 502 tests)", async () => {
    const rogue = await startUpstream({ tlsCert: pki.untrusted, name: "untrusted" });
    try {
      await assert.rejects(fetch(`${rogue.httpsUrl}/echo`, { dispatcher: agent }));
      assert.equal(rogue.requests.length, 0);
    } finally {
      await rogue.close();
    }
  });

  test("SSE hold: first event arrives while the stream is held open", async () => {
    const res = await fetch(`${up.httpUrl}/sse?n=3&hold=1&delay=10`);
    const reader = res.body.getReader();
    const first = await reader.read();
    assert.match(Buffer.from(first.value).toString(), /data: \{"n":1\}/);
    assert.equal(up.state.sseOpen, true);
    assert.equal(up.state.sseEventsSent, 1);
    up.release();
    let rest = "";
    for (let i = 0; i < 100; i++) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += Buffer.from(value).toString();
    }
    assert.match(rest, /"n":3/);
    assert.equal(up.state.sseOpen, false);
  });

  test("chunked and large downloads", async () => {
    const c = await fetch(`${up.httpUrl}/chunked?n=4`);
    assert.equal(await c.text(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");
    const l = await fetch(`${up.httpsUrl}/large?bytes=300000`, { dispatcher: agent });
    const buf = Buffer.from(await l.arrayBuffer());
    assert.equal(buf.length, 300000);
    assert.equal(buf.equals(largeBody(300000)), true);
  });

  test("MCP SDK client talks to the MCP SDK server directly", async () => {
    const client = new Client({ name: "harness", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(`${up.httpsUrl}/mcp`), {
      fetch: (url, init) => fetch(url, { ...init, dispatcher: agent }),
    });
    await client.connect(transport);
    try {
      const tools = await client.listTools();
      assert.deepEqual(tools.tools.map((t) => t.name).sort(), ["delete_namespace", "read_logs", "restart_service"]);
      const r = await client.callTool({ name: "read_logs", arguments: { service: "payments", lines: 2 } });
      assert.equal(r.content[0].text, "payments log line 1\npayments log line 2");
      const d = await client.callTool({ name: "delete_namespace", arguments: { namespace: "prod" } });
      assert.equal(d.content[0].text, "deleted prod");
      assert.deepEqual(up.mcpCalls.map((c) => c.tool), ["read_logs", "delete_namespace"]);
    } finally {
      await client.close();
    }
  });
});
