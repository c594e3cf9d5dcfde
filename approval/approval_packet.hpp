#pragma once
// The approval packet: everything an operator must see to approve or deny one held
// request (DESIGN §5). Built once when the hold is created and never changed, so the
// API, the webhook and the CLI all show the same thing, and what is approved is
// exactly what is released.

#include "approval/clock.hpp"
#include "approval/packet_redactor.hpp"
#include "approval/run_history.hpp"
#include "policy/engine.hpp"
#include "policy/request.hpp"

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::approval {

/// The held request as shown: every string already escaped for display and redacted.
struct PacketRequest {
  std::string method;
  std::string url;  // canonical URL, authority never truncated
  std::string host; // canonical ASCII host (punycode stays punycode)
  bool host_punycode = false;
  HeaderList headers;
  std::string body; // redacted, escaped, at most PacketOptions::body_bytes
  bool body_truncated = false;
  std::uint64_t body_bytes = 0; // full length of the buffered body
  std::string body_sha256;      // over the exact bytes that an approval releases
};

struct ApprovalPacket {
  std::string run;
  std::string agent;
  std::string request_id;
  std::string runbook;
  std::string runbook_sha256;
  std::string action; // "" for an unmatched request escalated by `unmatched: approval`
  std::string cls;    // action class, or "" when unmatched
  std::string code;   // decision code (approval_required, unmatched, ...)
  std::string reason; // the decision's sentence naming the rule
  std::string risk;
  std::string effect;
  std::string rollback;
  /// Who may decide (operator names or token-file groups); empty: any operator.
  std::vector<std::string> approvers;
  std::chrono::milliseconds timeout{0};
  std::optional<std::chrono::milliseconds> wait; // hold-then-defer
  PacketRequest request;
  /// Grant key component: SHA-256 over method, canonical URL and body SHA-256.
  std::string digest;
  std::vector<CallRecord> history; // the run's earlier calls, oldest first
  WallTime created{};

  nlohmann::json to_json() const;
};

struct PacketInput {
  std::string run;
  std::string agent;
  std::string request_id;
  const policy::Decision* decision = nullptr;
  const policy::Request* request = nullptr;
  /// SHA-256 hex of the full buffered body when the proxy holds more than
  /// Request::body; empty: computed over Request::body.
  std::string body_sha256;
  std::uint64_t body_bytes = 0; // 0: Request::body.size()
  std::vector<CallRecord> history;
};

struct PacketOptions {
  std::chrono::milliseconds default_timeout{std::chrono::minutes(10)};
  std::size_t body_bytes = 16 * 1024; // shown body limit, after redaction
};

/// Builds the packet from the engine's decision and the canonical request.
/// Redaction happens here, before the packet is stored or sent anywhere.
ApprovalPacket build_packet(const PacketInput& input, const PacketRedactor& redactor,
                            const PacketOptions& options, const Clock& clock);

/// The key a single-use grant is stored under: hex SHA-256 of
/// "METHOD SP canonical-url LF body-sha256-hex". The proxy computes the same digest for
/// a request that comes back after an approval_pending answer.
std::string request_digest(std::string_view method, std::string_view url,
                           std::string_view body_sha256_hex);

} // namespace runwarden::approval
