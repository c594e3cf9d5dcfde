// Request smuggling and framing attacks over raw sockets, in plain HTTP (absolute-form) and
// inside an intercepted CONNECT tunnel: each is refused with 400, the connection is closed
// after a framing error, and nothing of it reaches the upstream.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { parseResponses, rawExchange, rawTlsExchange } from "./lib/clients.mjs";
import { closingTests, startSuite } from "./lib/suite.mjs";

describe("smuggling and framing attacks", () => {
  let s;
  before(async () => { s = await startSuite("smuggling"); });
  after(async () => { if (s) { await s.stop(); s.cleanup(); } });

  const origin = () => `127.0.0.1:${s.upstream.httpPort}`;
  const abs = (p) => `http://${origin()}${p}`;
  /** Requests to the upstream whose URL carries `marker`, whatever the path. */
  const arrived = (marker) => s.upstream.requests.filter((r) => r.url.includes(marker));

  function assertRefused(res, what) {
    const responses = parseResponses(res.text);
    assert.ok(responses.length >= 1, `${what}: no response: ${JSON.stringify(res.text.slice(0, 300))}`);
    assert.equal(responses[0].status, 400, `${what}: ${res.text.slice(0, 300)}`);
    assert.equal(responses.length, 1, `${what}: more than one response after a framing error`);
    assert.equal(res.closedByPeer, true, `${what}: connection must be closed after a framing error`);
  }

  test("Content-Length together with Transfer-Encoding (CL.TE) is refused, nothing forwarded", async () => {
    const run = s.run("cl-te", "refused");
    const smuggled = `GET ${abs(`/denied/smuggled?m=${run}x`)} HTTP/1.1\r\nHost: ${origin()}\r\n\r\n`;
    const body = `0\r\n\r\n${smuggled}`;
    const res = await rawExchange(s.rw.proxyPort,
      `POST ${abs(`/echo?m=${run}`)} HTTP/1.1\r\nHost: ${origin()}\r\nRunwarden-Run: ${run}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`);
    assertRefused(res, "CL+TE");
    assert.equal(arrived(run).length, 0);
  });

  test("TE.CL with an obfuscated Transfer-Encoding is refused, nothing forwarded", async () => {
    const run = s.run("te-obfuscated", "refused");
    const res = await rawExchange(s.rw.proxyPort,
      `POST ${abs(`/echo?m=${run}`)} HTTP/1.1\r\nHost: ${origin()}\r\nRunwarden-Run: ${run}\r\n` +
      `Content-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\n`);
    assertRefused(res, "TE obfuscated");
    assert.equal(arrived(run).length, 0);
  });

  test("malformed chunk size is refused, nothing forwarded", async () => {
    const run = s.run("bad-chunk", "refused");
    const res = await rawExchange(s.rw.proxyPort,
      `POST ${abs(`/echo?m=${run}`)} HTTP/1.1\r\nHost: ${origin()}\r\nRunwarden-Run: ${run}\r\n` +
      `Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{"kind":"note"}\r\n0\r\n\r\n`);
    assertRefused(res, "bad chunk size");
    assert.equal(arrived(run).length, 0);
  });

  test("chunk longer than its declared size is refused, nothing forwarded", async () => {
    const run = s.run("chunk-overrun", "refused");
    const res = await rawExchange(s.rw.proxyPort,
      `POST ${abs(`/echo?m=${run}`)} HTTP/1.1\r\nHost: ${origin()}\r\nRunwarden-Run: ${run}\r\n` +
      `Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"kind":"note"}\r\n0\r\n\r\n`);
    assertRefused(res, "chunk overrun");
    assert.equal(arrived(run).length, 0);
  });

  test("two different Content-Length headers are refused, nothing forwarded", async () => {
    const run = s.run("dup-cl", "refused");
    const res = await rawExchange(s.rw.proxyPort,
      `POST ${abs(`/echo?m=${run}`)} HTTP/1.1\r\nHost: ${origin()}\r\nRunwarden-Run: ${run}\r\n` +
      `Content-Length: 15\r\nContent-Length: 3\r\n\r\n{"kind":"note"}`);
    assertRefused(res, "duplicate Content-Length");
    assert.equal(arrived(run).length, 0);
  });

  test("Host disagreeing with the absolute URI is refused, nothing forwarded", async () => {
    const run = s.run("host-mismatch", "refused");
    const res = await rawExchange(s.rw.proxyPort,
      `GET ${abs(`/echo?m=${run}`)} HTTP/1.1\r\nHost: evil.example\r\nRunwarden-Run: ${run}\r\n\r\n`);
    const r = parseResponses(res.text);
    assert.equal(r[0]?.status, 400, res.text.slice(0, 300));
    assert.equal(arrived(run).length, 0);
  });

  test("pipelined allowed + denied + allowed (plain HTTP): 200, 403, 200; only the allowed arrive", async () => {
    const a = s.run("pipe-a", "forwarded");
    const b = s.run("pipe-b", "denied");
    const c = s.run("pipe-c", "forwarded");
    // The last request closes the connection, so the exchange ends when all three are
    // answered, not on a timer a slow run could beat.
    const req = (method, p, run, extra = "") =>
      `${method} ${abs(p)} HTTP/1.1\r\nHost: ${origin()}\r\nRunwarden-Run: ${run}\r\n${extra}\r\n`;
    const res = await rawExchange(s.rw.proxyPort,
      req("GET", `/echo?m=${a}`, a) + req("DELETE", `/echo/x?m=${b}`, b) +
        req("GET", `/echo?m=${c}`, c, "Connection: close\r\n"),
      { timeoutMs: 15000 });
    const r = parseResponses(res.text);
    assert.deepEqual(r.map((x) => x.status), [200, 403, 200], res.text.slice(0, 600));
    assert.equal(JSON.parse(r[1].body).error, "denied_by_runbook");
    assert.equal(arrived(a).length, 1);
    assert.equal(arrived(b).length, 0);
    assert.equal(arrived(c).length, 1);
  });

  test("pipelined allowed + denied inside an intercepted TLS tunnel: 200, 403; the denied never arrives", async () => {
    const a = s.run("tls-pipe-a", "forwarded");
    const b = s.run("tls-pipe-b", "denied");
    const host = `localhost:${s.upstream.httpsPort}`;
    const req = (method, p, run, extra = "") =>
      `${method} ${p} HTTP/1.1\r\nHost: ${host}\r\nRunwarden-Run: ${run}\r\n${extra}\r\n`;
    const res = await rawTlsExchange(s.rw.proxyPort, "localhost", s.upstream.httpsPort, s.rw.caPem,
      req("GET", `/echo?m=${a}`, a) + req("GET", `/denied/x?m=${b}`, b, "Connection: close\r\n"),
      { timeoutMs: 15000 });
    assert.equal(res.connectStatus, 200, res.text.slice(0, 300));
    const r = parseResponses(res.text);
    assert.deepEqual(r.map((x) => x.status), [200, 403], res.text.slice(0, 600));
    assert.equal(arrived(a).length, 1);
    assert.equal(arrived(b).length, 0);
  });

  test("CL+TE inside an intercepted TLS tunnel is refused and the tunnel closed", async () => {
    const run = s.run("tls-cl-te", "refused");
    const host = `localhost:${s.upstream.httpsPort}`;
    const body = `0\r\n\r\nGET /denied/y?m=${run}x HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
    const res = await rawTlsExchange(s.rw.proxyPort, "localhost", s.upstream.httpsPort, s.rw.caPem,
      `POST /echo?m=${run} HTTP/1.1\r\nHost: ${host}\r\nRunwarden-Run: ${run}\r\nContent-Length: ${body.length}\r\n` +
      `Transfer-Encoding: chunked\r\n\r\n${body}`);
    assert.equal(res.connectStatus, 200);
    assertRefused(res, "CL+TE in TLS");
    assert.equal(arrived(run).length, 0);
  });

  test("Host inside the tunnel disagreeing with the CONNECT target is refused", async () => {
    const run = s.run("tls-host-mismatch", "refused");
    const res = await rawTlsExchange(s.rw.proxyPort, "localhost", s.upstream.httpsPort, s.rw.caPem,
      `GET /echo?m=${run} HTTP/1.1\r\nHost: other.example\r\nRunwarden-Run: ${run}\r\n\r\n`);
    assert.equal(res.connectStatus, 200);
    assert.equal(parseResponses(res.text)[0]?.status, 400, res.text.slice(0, 300));
    assert.equal(arrived(run).length, 0);
  });

  closingTests(test, () => s);
});
