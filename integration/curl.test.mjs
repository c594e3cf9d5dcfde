// curl through runwarden, both as --proxy and through the proxy environment variables:
// allowed requests arrive unchanged in meaning, denied and unmatched ones never arrive.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { readAudit } from "./lib/audit.mjs";
import { curl } from "./lib/clients.mjs";
import { assertDenied, closingTests, startSuite } from "./lib/suite.mjs";

describe("curl through runwarden", () => {
  let s;
  before(async () => { s = await startSuite("curl"); });
  after(async () => { if (s) { await s.stop(); s.cleanup(); } });

  const viaProxy = (run, extra = []) => ["--proxy", s.rw.proxyUrl, "--cacert", s.rw.caPath, "-H", `Runwarden-Run: ${run}`, ...extra];

  test("allowed HTTPS GET (CONNECT + interception) reaches the upstream once, Runwarden-Run stripped", async () => {
    const run = s.run("curl-get", "forwarded");
    const r = await curl([...viaProxy(run, ["-H", "X-Trace: 42"]), `${s.upstream.httpsUrl}/echo?m=${run}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.status, 200, r.body);
    const j = JSON.parse(r.body);
    assert.equal(j.upstream, "good");
    assert.equal(j.scheme, "https");
    const seen = s.upstream.seen(`/echo?m=${run}`);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].method, "GET");
    assert.equal(seen[0].headers["x-trace"], "42");
    assert.equal(seen[0].headers["runwarden-run"], undefined, "Runwarden-Run must be stripped");
    assert.equal(seen[0].headers.host, `localhost:${s.upstream.httpsPort}`);
  });

  test("allowed HTTPS POST with a JSON body arrives byte-for-byte", async () => {
    const run = s.run("curl-post", "forwarded");
    const body = JSON.stringify({ kind: "note", text: "p95 latency high", n: 3 });
    const r = await curl([...viaProxy(run, ["-H", "Content-Type: application/json", "--data-binary", body]),
      `${s.upstream.httpsUrl}/echo?m=${run}`]);
    assert.equal(r.status, 200, r.body);
    const seen = s.upstream.seen(`/echo?m=${run}`);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].method, "POST");
    assert.equal(seen[0].body.toString(), body);
  });

  test("HTTPS_PROXY / https_proxy environment: allowed passes, denied is refused", async () => {
    const env = { HTTPS_PROXY: s.rw.proxyUrl, https_proxy: s.rw.proxyUrl, NO_PROXY: "", no_proxy: "" };
    const ok = s.run("curl-env-ok", "forwarded");
    const r = await curl(["--cacert", s.rw.caPath, "-H", `Runwarden-Run: ${ok}`, `${s.upstream.httpsUrl}/echo/env?m=${ok}`], { env });
    assert.equal(r.status, 200, `${r.stderr} ${r.body}`);
    assert.equal(s.upstream.seen(`/echo/env?m=${ok}`).length, 1);
    const no = s.run("curl-env-denied", "denied");
    const d = await curl(["--cacert", s.rw.caPath, "-H", `Runwarden-Run: ${no}`, `${s.upstream.httpsUrl}/denied/env?m=${no}`], { env });
    assertDenied(d, d.body, { action: "forbidden_area" });
    assert.equal(s.upstream.seen(`/denied/env?m=${no}`).length, 0);
  });

  test("http_proxy environment (plain HTTP, absolute-form): allowed passes, denied is refused", async () => {
    // curl ignores upper-case HTTP_PROXY (httpoxy); lower-case http_proxy is the real variable.
    const env = { http_proxy: s.rw.proxyUrl, NO_PROXY: "", no_proxy: "" };
    const ok = s.run("curl-http-ok", "forwarded");
    const r = await curl(["-H", `Runwarden-Run: ${ok}`, `${s.upstream.httpUrl}/echo/plain?m=${ok}`], { env });
    assert.equal(r.status, 200, `${r.stderr} ${r.body}`);
    assert.equal(JSON.parse(r.body).scheme, "http");
    const seen = s.upstream.seen(`/echo/plain?m=${ok}`);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].headers["runwarden-run"], undefined);
    assert.equal(seen[0].headers["proxy-connection"], undefined, "hop-by-hop header forwarded");
    const no = s.run("curl-http-denied", "denied");
    const d = await curl(["-X", "DELETE", "-H", `Runwarden-Run: ${no}`, `${s.upstream.httpUrl}/echo/plain?m=${no}`], { env });
    assertDenied(d, d.body, { action: "delete_anything" });
    assert.equal(s.upstream.requests.filter((q) => q.method === "DELETE").length, 0);
  });

  test("denied HTTPS DELETE gets the JSON 403 and never reaches the upstream", async () => {
    const run = s.run("curl-delete", "denied");
    const r = await curl([...viaProxy(run, ["-X", "DELETE"]), `${s.upstream.httpsUrl}/echo/1?m=${run}`]);
    const j = assertDenied(r, r.body, { action: "delete_anything" });
    assert.ok(j.request_id);
    assert.equal(s.upstream.seen(`/echo/1?m=${run}`).length, 0);
  });

  test("unmatched request is denied (runbook unmatched: deny) and never arrives", async () => {
    const run = s.run("curl-unmatched", "denied");
    const r = await curl([...viaProxy(run), `${s.upstream.httpsUrl}/unlisted?m=${run}`]);
    assertDenied(r, r.body);
    assert.equal(s.upstream.seen(`/unlisted?m=${run}`).length, 0);
  });

  test("a body predicate that fails makes the POST unmatched and denied", async () => {
    const run = s.run("curl-body-denied", "denied");
    const r = await curl([...viaProxy(run, ["-H", "Content-Type: application/json", "--data-binary", '{"kind":"drop_table"}']),
      `${s.upstream.httpsUrl}/echo?m=${run}`]);
    assertDenied(r, r.body);
    assert.equal(s.upstream.seen(`/echo?m=${run}`).length, 0);
  });

  test("the intercepted certificate is runwarden's: without its CA curl refuses and nothing arrives", async () => {
    const r = await curl(["--proxy", s.rw.proxyUrl, "--cacert", s.pki.trustBundle,
      `${s.upstream.httpsUrl}/echo?m=no-trust`]);
    assert.equal(r.exitCode, 60, `curl must fail certificate verification: ${r.stderr}`);
    assert.equal(s.upstream.seen("/echo?m=no-trust").length, 0);
  });

  // limits.inspect_body_bytes is 1 MiB here: a 3 MiB body is judged on its head when no
  // rule that could match reads the body, and relayed whole; else it is refused with 413.
  const bigFile = () => {
    const file = path.join(s.dir, "upload-3mib.txt");
    if (!fs.existsSync(file)) {
      fs.writeFileSync(file, crypto.randomBytes(3 * 512 * 1024).toString("hex"));
    }
    return { file, data: fs.readFileSync(file) };
  };
  const sha = (b) => crypto.createHash("sha256").update(b).digest("hex");

  test("an HTTPS upload over the inspect limit, with no rule reading its body, arrives whole", async () => {
    const run = s.run("curl-upload", "forwarded");
    const { file, data } = bigFile();
    const r = await curl([...viaProxy(run, ["-X", "PUT", "--data-binary", `@${file}`]),
      `${s.upstream.httpsUrl}/upload/blob?m=${run}`]);
    assert.equal(r.status, 200, `${r.stderr} ${r.body.slice(0, 300)}`);
    const seen = s.upstream.seen(`/upload/blob?m=${run}`);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].body.length, data.length);
    assert.equal(sha(seen[0].body), sha(data));
    const rec = readAudit(s.rw.auditPath).find((x) => x.type === "exchange" && x.run === run);
    assert.ok(rec, "exchange record");
    assert.equal(rec.action, "upload_files");
    assert.equal(rec.request.bytes, data.length);
    assert.equal(rec.request.truncated, true);
    assert.equal(rec.request.body_sha256, sha(data), "the record's digest is the whole upload's");
    assert.equal(rec.response.status, 200);
  });

  test("a secret straddling the audit excerpt's cut in a relayed upload is redacted, not left as a readable head", async () => {
    const run = s.run("curl-upload-secret", "forwarded");
    const key = "AKIAQWERTYUIOPASDFGH"; // an AWS access key id: redacted wherever it stands
    const cut = 16 * 1024; // audit.body_bytes
    const body = Buffer.concat([Buffer.alloc(cut - 6, "x"), Buffer.from(key), Buffer.alloc(2 * 1024 * 1024, "y")]);
    const file = path.join(s.dir, "upload-secret.txt");
    fs.writeFileSync(file, body);
    const r = await curl([...viaProxy(run, ["-X", "PUT", "--data-binary", `@${file}`]),
      `${s.upstream.httpsUrl}/upload/secret?m=${run}`]);
    assert.equal(r.status, 200, r.stderr);
    assert.equal(s.upstream.seen(`/upload/secret?m=${run}`)[0].body.length, body.length);
    const raw = fs.readFileSync(s.rw.auditPath, "utf8");
    assert.ok(raw.includes(run), "the exchange is in the audit log");
    assert.equal(raw.includes(key.slice(0, 6)), false, "a head of the key reached the audit log");
  });

  test("an upload over the inspect limit that a rule must read is refused with 413 and never arrives", async () => {
    const run = s.run("curl-upload-413", "refused");
    const { file } = bigFile();
    const r = await curl([...viaProxy(run, ["-H", "Content-Type: application/json", "--data-binary", `@${file}`]),
      `${s.upstream.httpsUrl}/echo?m=${run}`]);
    assert.equal(r.status, 413, `${r.stderr} ${r.body}`);
    assert.equal(JSON.parse(r.body).error, "body_too_large");
    assert.match(JSON.parse(r.body).reason, /write_echo/); // the action whose rule reads the body
    assert.equal(s.upstream.seen(`/echo?m=${run}`).length, 0);
  });

  closingTests(test, () => s);
});
