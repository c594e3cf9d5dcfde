// A local webhook receiver that verifies Runwarden-Signature (t=<unix>,v1=<hex HMAC-SHA256
// of t + "." + body>) the way an operator's endpoint should, and records each delivery with
// whether its signature checked out. `failFirst` answers 500 to that many deliveries first,
// to exercise runwarden's retries.
import crypto from "node:crypto";
import http from "node:http";

/** The header value runwarden expects for `body` signed at unix time `t`. */
export function signBody(secret, body, t = Math.floor(Date.now() / 1000)) {
  const mac = crypto.createHmac("sha256", secret).update(`${t}.${body}`).digest("hex");
  return `t=${t},v1=${mac}`;
}

function verify(secret, header, body) {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? "");
  if (!m) return false;
  const want = crypto.createHmac("sha256", secret).update(`${m[1]}.${body}`).digest();
  const got = Buffer.from(m[2], "hex");
  const fresh = Math.abs(Date.now() / 1000 - Number(m[1])) <= 300;
  return fresh && got.length === want.length && crypto.timingSafeEqual(got, want);
}

export async function startWebhookReceiver({ secret, failFirst = 0 }) {
  const deliveries = [];
  let failures = failFirst;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      let json = null;
      try { json = JSON.parse(body); } catch { /* recorded as null */ }
      const rec = {
        at: Date.now(),
        event: req.headers["runwarden-event"],
        delivery: req.headers["runwarden-delivery"],
        signatureOk: verify(secret, req.headers["runwarden-signature"], body),
        signature: req.headers["runwarden-signature"], // as delivered (replay tests)
        body,
        json,
      };
      if (failures > 0) {
        failures -= 1;
        rec.answered = 500;
        deliveries.push(rec);
        res.writeHead(500).end();
        return;
      }
      rec.answered = 204;
      deliveries.push(rec);
      res.writeHead(204).end();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/hooks/runwarden`,
    deliveries,
    /** Accepted (2xx) deliveries of `event` whose data.id (or data.id of the hold) is `id`. */
    accepted(event, id) {
      return deliveries.filter((d) => d.answered === 204 && d.event === event && d.json?.data?.id === id);
    },
    async waitFor(pred, limitMs = 8000) {
      const deadline = Date.now() + limitMs;
      while (Date.now() < deadline) {
        const hit = deliveries.find(pred);
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 25));
      }
      return null;
    },
    close() {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}
