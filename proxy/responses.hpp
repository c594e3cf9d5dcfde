#pragma once
// Bodies of the answers runwarden gives the agent itself (DESIGN §4): machine-readable
// JSON an agent (or the model behind it) can act on. No I/O.

#include "policy/engine.hpp"

#include <string>
#include <string_view>

namespace runwarden::proxy {

/// Seconds an agent should wait before retrying a 503 with this code (the `Retry-After`
/// header): 30 for what waits on an operator (paused, the audit log failing, no CA to
/// intercept with), so an agent's retry loop does not fill the audit log with refusals; 1 for
/// the rest, which pass on their own (overload, a drain, a reload).
int retry_after_seconds(std::string_view code);

/// {"error":code,"reason":...,"request_id":...} for refusals that are not a runbook decision.
std::string error_body(std::string_view code, std::string_view reason, std::string_view request_id);

/// {"error","runbook","action","reason","request_id"} for a denial or a hold refused.
std::string decision_body(std::string_view code, const policy::Decision& decision,
                          std::string_view reason, std::string_view request_id);

/// JSON-RPC error objects for a denied MCP call or batch: one per call with a non-null id
/// (code -32001, message "<code>: <reason>", data {runbook, action, request_id}).
/// Empty when no call carries an id (notifications only).
std::string jsonrpc_refusal_body(const policy::Decision& decision, std::string_view fallback_code,
                                 std::string_view request_id);

} // namespace runwarden::proxy
