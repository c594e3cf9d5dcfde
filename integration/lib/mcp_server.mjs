// An MCP server built with the official TypeScript SDK, served over streamable HTTP in
// stateless mode (a fresh server and transport per HTTP request, as the SDK documents).
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

/** The tool server: read_logs (the runbook allows it), restart_service (needs approval),
 *  delete_namespace (denied). `calls` records every tool call that reached the server. */
export function createMcpHandler() {
  const calls = [];

  function buildServer() {
    const server = new McpServer({ name: "runwarden-integration-tools", version: "1.0.0" });
    server.registerTool(
      "read_logs",
      { description: "Read recent log lines of a service", inputSchema: { service: z.string(), lines: z.number().int().optional() } },
      async ({ service, lines }) => {
        calls.push({ tool: "read_logs", args: { service, lines } });
        const n = lines ?? 3;
        const text = Array.from({ length: n }, (_, i) => `${service} log line ${i + 1}`).join("\n");
        return { content: [{ type: "text", text }] };
      },
    );
    server.registerTool(
      "restart_service",
      { description: "Restart a service", inputSchema: { service: z.string() } },
      async ({ service }) => {
        calls.push({ tool: "restart_service", args: { service } });
        return { content: [{ type: "text", text: `restarted ${service}` }] };
      },
    );
    server.registerTool(
      "delete_namespace",
      { description: "Delete a namespace", inputSchema: { namespace: z.string() } },
      async ({ namespace }) => {
        calls.push({ tool: "delete_namespace", args: { namespace } });
        return { content: [{ type: "text", text: `deleted ${namespace}` }] };
      },
    );
    return server;
  }

  /** Handles one HTTP request whose body has already been read (`body`: Buffer). */
  async function handle(req, res, body) {
    if (req.method !== "POST") {
      res.writeHead(405, { "content-type": "application/json", allow: "POST" });
      res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message: "Method not allowed." }, id: null }));
      return;
    }
    let parsed;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      res.writeHead(400, { "content-type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32700, message: "Parse error" }, id: null }));
      return;
    }
    const server = buildServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on("close", () => {
      transport.close();
      server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, parsed);
  }

  return { handle, calls };
}
