// Shared start-up and set-up for suites that write their own runwarden config (approvals,
// operations): `runwarden ca init`, an operator tokens file, `runwarden serve` started and
// awaited on its listeners, stopped with a bounded wait, and an admin API caller. Every
// wait is bounded; a start that fails returns the log instead of hanging.
import { execFile, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fetch } from "undici";
import { canConnect, runwardenBin } from "./runwarden.mjs";

export { canConnect }; // suites import it from here too

const START_LIMIT_MS = 15000;
const STOP_LIMIT_MS = 15000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const sha256 = (s) => crypto.createHash("sha256").update(s).digest("hex");

/** `runwarden ca init DIR/certs` (the interception CA every config needs). */
export async function initCa(dir) {
  await new Promise((resolve, reject) => execFile(runwardenBin(),
    ["ca", "init", path.join(dir, "certs"), "--days", "2"], { timeout: 20000 },
    (e) => (e ? reject(e) : resolve())));
}

/**
 * Writes an operator tokens file: one `NAME SHA256HEX [GROUP,...]` line per entry of
 * `operators` ({ name, token, groups? }). Returns the path.
 */
export function writeTokensFile(file, operators) {
  const lines = operators.map(({ name, token, groups }) =>
    [name, sha256(token), ...(groups?.length ? [groups.join(",")] : [])].join(" "));
  fs.writeFileSync(file, `${lines.join("\n")}\n`);
  return file;
}

/**
 * Starts `runwarden serve -c DIR/runwarden.yaml` in `dir` and waits (bounded) until every
 * port in `ports` accepts connections. `env` replaces the environment (PATH is kept).
 * Returns { child, logs(), exit, exited(), stop(signal) }; if runwarden exits during
 * start-up, `child` is absent and `exited()` says how (so a suite can assert on it).
 * May be called again on the same dir (restart): each start logs to its own file.
 */
export async function serve({ dir, ports, env = {} }) {
  const logPath = path.join(dir, `runwarden.${Date.now()}.${crypto.randomBytes(3).toString("hex")}.log`);
  const out = fs.openSync(logPath, "w");
  const child = spawn(runwardenBin(), ["serve", "-c", path.join(dir, "runwarden.yaml")],
    { cwd: dir, stdio: ["ignore", out, out], env: { PATH: process.env.PATH, ...env } });
  fs.closeSync(out);
  let exited = null;
  const exit = new Promise((r) => child.once("exit", (code, signal) => { exited = { code, signal }; r(exited); }));
  const logs = () => { try { return fs.readFileSync(logPath, "utf8"); } catch { return ""; } };
  const deadline = Date.now() + START_LIMIT_MS;
  for (;;) {
    const up = await Promise.all(ports.map(canConnect));
    if (up.every(Boolean)) break;
    if (exited) return { exited: () => exited, logs, exit };
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await exit;
      throw new Error(`runwarden did not start within ${START_LIMIT_MS} ms:\n${logs()}`);
    }
    await sleep(50);
  }
  return {
    child, logs, exit,
    exited: () => exited,
    /** Sends `signal` and waits (bounded, then SIGKILL); returns { code, signal }. */
    async stop(signal = "SIGTERM") {
      if (exited) return exited;
      child.kill(signal);
      const t = setTimeout(() => child.kill("SIGKILL"), STOP_LIMIT_MS);
      const r = await exit;
      clearTimeout(t);
      return r;
    },
  };
}

/**
 * An admin API caller: admin(method, path, { token, body, headers }) with `token` defaulting
 * to `defaultToken` (null: no Authorization header). Returns { status, json, text, contentType }.
 */
export function adminClient(adminUrl, defaultToken) {
  return async (method, p, { token = defaultToken, body, headers = {} } = {}) => {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h["content-type"] = "application/json";
    const res = await fetch(`${adminUrl}${p}`, { method, headers: h, body });
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, json, text, contentType: res.headers.get("content-type") };
  };
}
