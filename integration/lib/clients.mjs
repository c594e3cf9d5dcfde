// Real clients: the curl binary, undici (Node's fetch engine) through a ProxyAgent, and raw
// sockets for requests no well-behaved client would send.
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ProxyAgent } from "undici";

/**
 * Runs curl with `args`; returns { status, contentType, connectStatus (the proxy's answer to
 * CONNECT, 0 if none), body, exitCode, stderr }.
 * `env` adds environment variables (HTTP_PROXY, HTTPS_PROXY, ...).
 */
export function curl(args, { env = {}, timeoutMs = 20000 } = {}) {
  const bodyFile = path.join(os.tmpdir(), `rw-curl-${process.pid}-${crypto.randomBytes(6).toString("hex")}`);
  const fullArgs = ["-sS", "--max-time", String(Math.ceil(timeoutMs / 1000)), "-o", bodyFile,
    "-w", "%{http_code}\\n%{content_type}\\n%{http_connect}", ...args];
  const cleanEnv = { PATH: process.env.PATH, HOME: process.env.HOME ?? "/tmp", ...env };
  return new Promise((resolve) => {
    execFile("curl", fullArgs, { env: cleanEnv, timeout: timeoutMs + 5000 }, (err, stdout, stderr) => {
      let body = "";
      try { body = fs.readFileSync(bodyFile, "utf8"); fs.unlinkSync(bodyFile); } catch { /* no body */ }
      const [status, contentType = "", connect = "0"] = stdout.split("\n");
      resolve({ status: Number(status), contentType, connectStatus: Number(connect), body, exitCode: err ? err.code : 0, stderr });
    });
  });
}

/** An undici dispatcher that sends everything through runwarden and trusts only its CA. */
export function proxyAgent(rw) {
  return new ProxyAgent({ uri: rw.proxyUrl, requestTls: { ca: rw.caPem }, proxyTls: {} });
}

/**
 * Writes `data` on a fresh TCP connection to the proxy (optionally in several writes),
 * and collects everything until the peer closes or `timeoutMs` passes.
 * Returns { text, closedByPeer }.
 */
export function rawExchange(port, data, { timeoutMs = 4000, pieces = null } = {}) {
  return new Promise((resolve) => {
    const chunks = [];
    let settled = false;
    const sock = net.connect({ host: "127.0.0.1", port });
    const finish = (closedByPeer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ text: Buffer.concat(chunks).toString("latin1"), closedByPeer });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on("data", (c) => chunks.push(c));
    sock.on("end", () => finish(true));
    sock.on("close", () => finish(true));
    sock.on("error", () => finish(true));
    sock.on("connect", async () => {
      for (const p of pieces ?? [data]) {
        sock.write(p);
        if (pieces) await new Promise((r) => setTimeout(r, 30));
      }
    });
  });
}

/**
 * Splits a byte stream of HTTP/1.1 responses into { status, headers, body } objects
 * (Content-Length and chunked bodies). Stops at anything it cannot frame.
 */
export function parseResponses(text) {
  const out = [];
  let rest = text;
  while (rest.startsWith("HTTP/1.")) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) break;
    const lines = rest.slice(0, end).split("\r\n");
    const status = Number(lines[0].split(" ")[1]);
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(":");
      headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    rest = rest.slice(end + 4);
    let body = "";
    if (headers["transfer-encoding"]?.toLowerCase().includes("chunked")) {
      for (;;) {
        const le = rest.indexOf("\r\n");
        if (le < 0) { rest = ""; break; }
        const size = parseInt(rest.slice(0, le), 16);
        rest = rest.slice(le + 2);
        if (!size) { rest = rest.slice(rest.indexOf("\r\n") + 2); break; }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    } else {
      const len = Number(headers["content-length"] ?? 0);
      body = rest.slice(0, len);
      rest = rest.slice(len);
    }
    out.push({ status, headers, body });
  }
  return out;
}

/**
 * Opens a CONNECT tunnel through the proxy to host:port, then TLS inside it (trusting `ca`,
 * checking `host`), writes `data` and collects the decrypted bytes until close or timeout.
 * Returns { connectStatus, text, closedByPeer }.
 */
export async function rawTlsExchange(proxyPort, host, port, ca, data, { timeoutMs = 4000, headers = "" } = {}) {
  const tls = await import("node:tls");
  const sock = net.connect({ host: "127.0.0.1", port: proxyPort });
  await new Promise((resolve, reject) => { sock.once("connect", resolve); sock.once("error", reject); });
  sock.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n${headers}\r\n`);
  const head = await new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => { sock.removeAllListeners("data"); resolve(buf.toString("latin1")); }, timeoutMs);
    sock.on("data", (c) => {
      buf = Buffer.concat([buf, c]);
      if (buf.includes("\r\n\r\n")) {
        clearTimeout(t);
        sock.removeAllListeners("data");
        resolve(buf.toString("latin1"));
      }
    });
  });
  const connectStatus = Number(head.split(" ")[1]);
  if (connectStatus !== 200) {
    sock.destroy();
    return { connectStatus, text: head, closedByPeer: true };
  }
  return new Promise((resolve) => {
    const chunks = [];
    let settled = false;
    const t = tls.connect({ socket: sock, servername: host, ca, ALPNProtocols: ["http/1.1"] });
    const finish = (closedByPeer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      t.destroy();
      sock.destroy();
      resolve({ connectStatus, text: Buffer.concat(chunks).toString("latin1"), closedByPeer });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    t.on("secureConnect", () => t.write(data));
    t.on("data", (c) => chunks.push(c));
    t.on("end", () => finish(true));
    t.on("close", () => finish(true));
    t.on("error", () => finish(true));
  });
}
