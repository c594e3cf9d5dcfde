// The official MCP TypeScript SDK client calling an MCP SDK server (streamable HTTP) through
// runwarden: the allowed tool works, the denied tool comes back as an error the client
// reports, with runwarden's reason, and never reaches the server.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { fetch } from "undici";
import { proxyAgent } from "./lib/clients.mjs";
import { closingTests, startSuite } from "./lib/suite.mjs";

describe("MCP SDK client through runwarden", () => {
  let s;
  let agent;
  let client;
  const inflight = new Set();

  /** Each HTTP request of the MCP session gets its own run id and expected outcome. */
  function mcpFetch(url, init = {}) {
    let outcome = "forwarded";
    let label = "mcp-get";
    if (init.method === "POST" && typeof init.body === "string") {
      const msg = JSON.parse(init.body);
      const tool = msg?.method === "tools/call" ? msg.params?.name : null;
      label = `mcp-${tool ?? String(msg?.method ?? "batch").replace(/\W/g, "-")}`;
      if (tool === "delete_namespace") outcome = "denied";
    }
    const run = s.run(label, outcome);
    const u = new URL(url);
    u.searchParams.set("m", run);
    const headers = new Headers(init.headers);
    headers.set("Runwarden-Run", run);
    const p = fetch(u, { ...init, headers, dispatcher: agent });
    inflight.add(p);
    p.finally(() => inflight.delete(p)).catch(() => {});
    return p;
  }

  before(async () => {
    s = await startSuite("mcp");
    agent = proxyAgent(s.rw);
    client = new Client({ name: "runwarden-integration-agent", version: "1.0.0" });
    // The catalogue's /mcp matchers take any query: the run id rides in ?m= for the audit check.
    const transport = new StreamableHTTPClientTransport(new URL(`${s.upstream.httpsUrl}/mcp`), { fetch: mcpFetch });
    await client.connect(transport);
  });
  after(async () => {
    await client?.close();
    await agent?.close();
    if (s) { await s.stop(); s.cleanup(); }
  });

  test("tools/list works through runwarden", async () => {
    const tools = await client.listTools();
    assert.deepEqual(tools.tools.map((t) => t.name).sort(), ["delete_namespace", "read_logs", "restart_service"]);
  });

  test("allowed tool (read_logs) works and reaches the server with its arguments", async () => {
    const r = await client.callTool({ name: "read_logs", arguments: { service: "payments-api", lines: 2 } });
    assert.equal(r.isError, undefined);
    assert.equal(r.content[0].text, "payments-api log line 1\npayments-api log line 2");
    assert.deepEqual(s.upstream.mcpCalls.filter((c) => c.tool === "read_logs").map((c) => c.args), [{ service: "payments-api", lines: 2 }]);
  });

  test("denied tool (delete_namespace): the client reports an error with runwarden's reason", async () => {
    await assert.rejects(
      client.callTool({ name: "delete_namespace", arguments: { namespace: "payments" } }),
      (err) => {
        assert.match(String(err.message), /denied_by_runbook/);
        assert.equal(err.code, -32001);
        return true;
      },
    );
    assert.equal(s.upstream.mcpCalls.filter((c) => c.tool === "delete_namespace").length, 0);
  });

  test("denied MCP call on the wire: HTTP 200, JSON-RPC error -32001 with the same id", async () => {
    const run = s.run("mcp-raw-denied", "denied");
    const res = await fetch(`${s.upstream.httpsUrl}/mcp?m=${run}`, {
      method: "POST",
      dispatcher: agent,
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "Runwarden-Run": run },
      body: JSON.stringify({ jsonrpc: "2.0", id: 77, method: "tools/call", params: { name: "delete_namespace", arguments: { namespace: "prod" } } }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    const j = await res.json();
    assert.equal(j.jsonrpc, "2.0");
    assert.equal(j.id, 77);
    assert.equal(j.error.code, -32001);
    assert.match(j.error.message, /^denied_by_runbook/);
    assert.equal(typeof j.error.data, "object");
    assert.equal(s.upstream.mcpCalls.filter((c) => c.tool === "delete_namespace").length, 0);
  });

  test("all MCP HTTP requests have finished", async () => {
    const deadline = Date.now() + 5000;
    while (inflight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    assert.equal(inflight.size, 0);
    await client.close();
    client = null;
  });

  closingTests(test, () => s);
});
