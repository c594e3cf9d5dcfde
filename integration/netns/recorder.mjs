// Test-bed servers for integration/netns (no dependencies, Node 20).
//
//   node recorder.mjs upstream NAME LOG READY ADDR:PORT...
//       An HTTP server on every ADDR:PORT; answers every request with JSON naming itself and
//       the connection it saw, and appends the same JSON as one line to LOG.
//   node recorder.mjs upstream-tls NAME LOG READY ADDR:PORT...
//       The same over HTTPS, with the certificate and key in RWNT_TLS_CERT / RWNT_TLS_KEY.
//   node recorder.mjs stub NAME LOG READY ADDR:PORT...
//       Stands in for runwarden's transparent listener until it exists: records each
//       redirected connection, then makes its OWN outbound connection to the request's Host
//       (it cannot read SO_ORIGINAL_DST) and relays the answer. A request that already carries
//       the stub's hop header means its own traffic was redirected back to it: 508, loop.
//
// READY is written once every listener is bound. Every socket has a deadline; the process
// exits by itself after RWNT_LIFETIME_MS (default 120 s) in case the test bed is killed.
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';

const [mode, name, logFile, readyFile, ...addrs] = process.argv.slice(2);
if (!['upstream', 'upstream-tls', 'stub'].includes(mode) || !name || !logFile || !readyFile || !addrs.length) {
  console.error('usage: recorder.mjs upstream|upstream-tls|stub NAME LOG READY ADDR:PORT...');
  process.exit(2);
}
const HOP = 'x-rwnt-hop';
const lifetime = Number(process.env.RWNT_LIFETIME_MS ?? 120000);
setTimeout(() => process.exit(0), lifetime).unref();

function splitAddr(a) {
  const i = a.lastIndexOf(':');
  let host = a.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { host, port: Number(a.slice(i + 1)) };
}

// "h", "h:p", "[v6]" or "[v6]:p" -> {host, port}; port 80 when absent (plain HTTP only).
function hostHeader(h) {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+))(?::(\d+))?$/.exec(h);
  if (!m) return { host: '', port: 0 };
  return { host: m[1] ?? m[2], port: Number(m[3] ?? 80) };
}

function record(req, extra) {
  const s = req.socket;
  const entry = {
    server: name,
    mode,
    uid: process.getuid(),
    local: `${s.localAddress}:${s.localPort}`,
    remote: s.remoteAddress,
    method: req.method,
    url: req.url,
    host: req.headers.host ?? '',
    hop: req.headers[HOP] ?? null,
    ...extra,
  };
  appendFileSync(logFile, JSON.stringify(entry) + '\n');
  return entry;
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function relay(req, res) {
  const entry = record(req, {});
  if (entry.hop) {
    reply(res, 508, { error: 'loop: the stub received its own upstream request', entry });
    return;
  }
  const target = hostHeader(req.headers.host ?? '');
  const up = http.request(
    {
      host: target.host,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: { host: req.headers.host, [HOP]: name },
      agent: false,
      timeout: 3000,
    },
    (upRes) => {
      const chunks = [];
      upRes.on('data', (c) => chunks.push(c));
      upRes.on('end', () => {
        let upstream;
        try {
          upstream = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          upstream = Buffer.concat(chunks).toString('utf8');
        }
        reply(res, upRes.statusCode ?? 502, { via: name, stub: entry, upstream });
      });
    },
  );
  up.on('timeout', () => up.destroy(new Error('upstream timeout')));
  up.on('error', (e) => reply(res, 502, { via: name, stub: entry, error: String(e.message) }));
  req.pipe(up);
}

function serve(req, res) {
  req.resume();
  req.on('end', () => reply(res, 200, record(req, {})));
}

let pending = addrs.length;
for (const a of addrs) {
  const { host, port } = splitAddr(a);
  const server =
    mode === 'upstream-tls'
      ? https.createServer(
          { cert: readFileSync(process.env.RWNT_TLS_CERT), key: readFileSync(process.env.RWNT_TLS_KEY) },
          serve,
        )
      : http.createServer(mode === 'stub' ? relay : serve);
  server.requestTimeout = 5000;
  server.headersTimeout = 5000;
  server.keepAliveTimeout = 1000;
  server.on('error', (e) => {
    console.error(`${name}: cannot listen on ${a}: ${e.message}`);
    process.exit(1);
  });
  server.listen({ host, port, ipv6Only: host.includes(':') }, () => {
    if (--pending === 0) writeFileSync(readyFile, `${process.pid}\n`);
  });
}
