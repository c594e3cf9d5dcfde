// A test PKI made per run with the openssl CLI (node:crypto cannot sign X.509):
// a trusted CA for the upstreams, a second CA nobody trusts, and server certificates.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

function openssl(args, cwd) {
  try {
    execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 20000 });
  } catch (e) {
    throw new Error(`openssl ${args.join(" ")} failed: ${e.stderr?.toString() ?? e.message}`);
  }
}

/** Creates a self-signed ECDSA P-256 CA in `dir`; returns { cert, key } paths. */
export function makeCa(dir, name) {
  fs.mkdirSync(dir, { recursive: true });
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "2", "-subj", `/O=runwarden integration/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-addext", "subjectKeyIdentifier=hash",
  ]);
  return { cert, key };
}

/**
 * Issues a server certificate from `ca` for `sans` (e.g. ["DNS:localhost", "IP:127.0.0.1"]).
 * Returns { cert, key } as PEM strings, ready for https.createServer.
 */
export function issueServerCert(dir, ca, name, sans) {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.pem`);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(ext, [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth",
    `subjectAltName=${sans.join(",")}`,
    "authorityKeyIdentifier=keyid",
    "",
  ].join("\n"));
  openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", csr, "-subj", `/CN=${name}`]);
  openssl(["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial",
    `0x${Date.now().toString(16)}${Math.floor(Math.random() * 1e9).toString(16)}`,
    "-days", "2", "-sha256", "-extfile", ext, "-out", cert]);
  return { cert: fs.readFileSync(cert, "utf8"), key: fs.readFileSync(key, "utf8"), certPath: cert };
}

/**
 * The whole per-run PKI: `trusted` is the CA runwarden's tls.upstream_trust names;
 * `good` is valid for localhost/127.0.0.1; `wrongName` is trusted but for another name;
 * `untrusted` has the right names but comes from a CA runwarden does not trust.
 */
export function makeTestPki(dir) {
  const trusted = makeCa(dir, "upstream-ca");
  const rogue = makeCa(dir, "rogue-ca");
  return {
    trusted,
    trustBundle: trusted.cert,
    good: issueServerCert(dir, trusted, "upstream", ["DNS:localhost", "IP:127.0.0.1"]),
    wrongName: issueServerCert(dir, trusted, "wrong-name", ["DNS:wrong.example"]),
    untrusted: issueServerCert(dir, rogue, "untrusted", ["DNS:localhost", "IP:127.0.0.1"]),
  };
}
