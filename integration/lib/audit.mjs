// Reads runwarden's audit log (JSON Lines, DESIGN §6) the way an auditor would.
import fs from "node:fs";

/** Every whole record in the file (a torn last line is left out). */
export function readAudit(file) {
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if (e.code === "ENOENT") return [];
    throw e;
  }
  const lines = text.split("\n");
  lines.pop(); // "" after the final newline, or a torn line
  return lines.filter((l) => l.trim() !== "").map((l, i) => {
    try {
      return JSON.parse(l);
    } catch {
      throw new Error(`${file}:${i + 1}: not JSON: ${l.slice(0, 200)}`);
    }
  });
}

/** The "exchange" records (one per finished request) of run `run`. */
export function exchangesOf(file, run) {
  return readAudit(file).filter((r) => r.type === "exchange" && r.run === run);
}

/**
 * Waits (bounded) until run `run` has `count` exchange records, then returns them. The record
 * is written before the response completes, so this normally returns at once; the bound
 * only absorbs a client that finished reading before the proxy's write returned.
 */
export async function waitForExchanges(file, run, count = 1, limitMs = 3000) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const found = exchangesOf(file, run);
    if (found.length >= count || Date.now() > deadline) return found;
    await new Promise((r) => setTimeout(r, 25));
  }
}
