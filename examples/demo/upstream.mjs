// The demo's tool API: a plain-HTTP server on 127.0.0.1:18080 that answers every call with
// what it received, so you can see what runwarden forwarded (and that refused calls never arrive).
import http from "node:http";

const port = Number(process.env.DEMO_UPSTREAM_PORT ?? 18080);
let seen = 0;

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    seen += 1;
    const body = Buffer.concat(chunks).toString("utf8");
    console.log(`demo-upstream: #${seen} ${req.method} ${req.url} (${body.length} body bytes)`);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ tool: "demo", received: { method: req.method, url: req.url, body }, seen }) + "\n");
  });
});
server.listen(port, "127.0.0.1", () => console.log(`demo-upstream: listening on http://127.0.0.1:${port}`));
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)));
