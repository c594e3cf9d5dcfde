// A recording upstream: one handler served over plain HTTP (127.0.0.1) and HTTPS (localhost,
// certificate from the per-run test CA). It records every request that reaches it, as it
// arrives (method, url, headers, then body), so a test can prove a refused request never did.
import crypto from "node:crypto";
import http from "node:http";
import https from "node:https";
import { createMcpHandler } from "./mcp_server.mjs";

const HOLD_LIMIT_MS = 10000;

/** Deterministic bytes for /large, so the client can check what it received. */
export function largeBody(bytes) {
  const block = crypto.createHash("sha256").update("runwarden").digest();
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += block.length) block.copy(out, i, 0, Math.min(block.length, bytes - i));
  return out;
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server.address().port));
  });
}

/**
 * Starts the upstream. Options: { tlsCert: {cert, key} | undefined, name }.
 * Endpoints: /echo (JSON of what arrived), /sse?n=&delay=&hold=1, /chunked?n=, /large?bytes=,
 * any path ending in /status/<code> (that status), /mcp (MCP SDK server), anything else: echo.
 */
export async function startUpstream({ tlsCert, name = "upstream" } = {}) {
  const requests = [];
  const mcp = createMcpHandler();
  let holdRelease = null;
  const state = { sseOpen: false, sseEventsSent: 0 };

  async function handler(req, res, scheme) {
    const record = {
      scheme,
      method: req.method,
      url: req.url,
      headers: { ...req.headers },
      rawHeaders: [...req.rawHeaders],
      body: null,
      complete: false,
    };
    requests.push(record);
    const chunks = [];
    for await (const c of req) chunks.push(c);
    record.body = Buffer.concat(chunks);
    record.complete = true;

    const url = new URL(req.url, `${scheme}://upstream`);
    const q = url.searchParams;
    if (url.pathname === "/mcp") {
      await mcp.handle(req, res, record.body);
      return;
    }
    if (url.pathname === "/sse") {
      const n = Math.min(Number(q.get("n") ?? 3), 100);
      const delay = Math.min(Number(q.get("delay") ?? 50), 2000);
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      state.sseOpen = true;
      state.sseEventsSent = 0;
      for (let i = 1; i <= n; i++) {
        res.write(`id: ${i}\nevent: tick\ndata: {"n":${i}}\n\n`);
        state.sseEventsSent = i;
        if (i === 1 && q.get("hold") === "1") {
          // Keep the stream open until the test has seen the first event (bounded).
          await new Promise((resolve) => {
            const t = setTimeout(resolve, HOLD_LIMIT_MS);
            holdRelease = () => { clearTimeout(t); resolve(); };
          });
          holdRelease = null;
        } else if (i < n) {
          await new Promise((r) => setTimeout(r, delay));
        }
      }
      state.sseOpen = false;
      res.end();
      return;
    }
    if (url.pathname === "/chunked") {
      const n = Math.min(Number(q.get("n") ?? 5), 1000);
      res.writeHead(200, { "content-type": "text/plain" }); // no length: chunked
      for (let i = 0; i < n; i++) {
        res.write(`chunk ${i}\n`);
        await new Promise((r) => setTimeout(r, 5));
      }
      res.end();
      return;
    }
    if (url.pathname === "/large") {
      const bytes = Math.min(Number(q.get("bytes") ?? 1 << 20), 64 << 20);
      const body = largeBody(bytes);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(bytes) });
      res.end(body);
      return;
    }
    const statusMatch = url.pathname.match(/\/status\/([1-5]\d\d)$/);
    const status = statusMatch ? Number(statusMatch[1]) : 200;
    const payload = {
      upstream: name,
      scheme,
      method: req.method,
      url: req.url,
      headers: req.headers,
      body: record.body.toString("utf8"),
    };
    res.writeHead(status, { "content-type": "application/json", "x-upstream": name });
    res.end(JSON.stringify(payload));
  }

  const wrap = (scheme) => (req, res) => {
    handler(req, res, scheme).catch((e) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(e?.stack ?? e));
    });
  };
  const plain = http.createServer(wrap("http"));
  const secure = tlsCert ? https.createServer({ cert: tlsCert.cert, key: tlsCert.key }, wrap("https")) : null;
  const tlsErrors = [];
  secure?.on("tlsClientError", (e) => tlsErrors.push(e.code ?? e.message));
  const httpPort = await listen(plain);
  const httpsPort = secure ? await listen(secure) : 0;

  return {
    name,
    requests,
    mcpCalls: mcp.calls,
    tlsErrors,
    state,
    httpPort,
    httpsPort,
    /** Base URLs as tests address them (no DNS for test names: localhost and 127.0.0.1). */
    httpUrl: `http://127.0.0.1:${httpPort}`,
    httpsUrl: secure ? `https://localhost:${httpsPort}` : null,
    /** Requests whose path starts with `prefix`. */
    seen(prefix) {
      return requests.filter((r) => r.url.startsWith(prefix));
    },
    /** Lets a held /sse?hold=1 stream continue. */
    release() {
      holdRelease?.();
    },
    async close() {
      holdRelease?.();
      for (const s of [plain, secure]) {
        if (!s) continue;
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
    },
  };
}
