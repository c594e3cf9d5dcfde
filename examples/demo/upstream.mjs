// Demo upstream for scripts/demo.sh: a tiny support service on http://127.0.0.1:18080.
// It logs every request that reaches it, so you can see that denied and held calls
// never arrive. Plain HTTP on loopback: no certificates, no DNS.
import http from 'node:http';

const host = process.env.DEMO_HOST ?? '127.0.0.1';
const port = Number(process.env.DEMO_PORT ?? 18080);
const maxBody = 1024 * 1024;
let nextTicket = 1000;

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {'content-type': 'application/json', 'content-length': Buffer.byteLength(text)});
  res.end(text);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > maxBody) {
      send(res, 413, {error: 'body too large'});
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url, `http://${host}:${port}`);
    console.log(`upstream: ${req.method} ${url.pathname}${url.search} ${raw.length ? raw : ''}`);
    let json = {};
    if (raw.length) {
      try {
        json = JSON.parse(raw);
      } catch {
        return send(res, 400, {error: 'body is not JSON'});
      }
    }
    if (req.method === 'GET' && url.pathname === '/status') {
      return send(res, 200, {status: 'ok', service: 'demo-support'});
    }
    if (req.method === 'GET' && url.pathname.startsWith('/logs/')) {
      return send(res, 200, {lines: [`${new Date().toISOString()} INFO ${url.pathname.slice(6)}: all quiet`]});
    }
    if (req.method === 'POST' && url.pathname === '/tickets') {
      return send(res, 201, {id: nextTicket++, subject: json.subject ?? null});
    }
    if (req.method === 'POST' && url.pathname === '/refunds') {
      return send(res, 200, {refunded: json.amount ?? null, currency: 'usd'});
    }
    if (req.method === 'DELETE') {
      return send(res, 200, {deleted: url.pathname});
    }
    return send(res, 404, {error: 'not found'});
  });
});

server.listen(port, host, () => console.log(`demo upstream listening on http://${host}:${port}`));
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
