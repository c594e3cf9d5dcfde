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
  /// Grant key component: `request_digest` (method, canonical URL, body SHA-256, the
  /// forwarded headers).
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

/// Whether a request field is part of the approval digest. An approval releases exactly
/// the payload that was shown (DESIGN §5), so every field the proxy forwards is in: a
/// grant for a read-only Authorization must not release the same body sent with an
/// admin token or an X-HTTP-Method-Override. Out are only fields that are not forwarded
/// or not the client's to fix: hop-by-hop fields (RFC 9110 §7.6.1, as proxy/wire_head),
/// fields named in Connection or Proxy-Connection (`connection_tokens`, lower-case),
/// Runwarden-* (consumed by the proxy), Host (rebuilt from the canonical URL, which the
/// digest covers), Content-Length (follows the body) and Expect (not forwarded), and
/// traceparent/tracestate (W3C trace context: a new span id on every attempt by design,
/// so an identical retry would otherwise never match its grant).
bool digest_covers_header(std::string_view name, const std::vector<std::string>& connection_tokens);

/// The key a single-use grant is stored under, computed the same way at hold time
/// (`build_packet`) and when a request comes back after an approval_pending answer.
/// Covers the method, the canonical URL, `body_sha256_hex` (over the exact bytes an
/// approval releases) and every field `digest_covers_header` keeps: names compared
/// case-insensitively, fields ordered by name so the order of different names does not
/// matter, while repeated values of one name keep their order (it can change their
/// meaning). Keyed with a random per-process secret (HMAC-SHA256): the digest is shown in
/// the packet, the audit log and webhooks, and it covers values the packet redacts
/// (Authorization), so a plain hash would let anyone holding the log test guesses of a
/// weak credential offline. Grants and deferred holds never outlive the process, so
/// nothing needs the digest to be stable across restarts. Empty if the CSPRNG failed;
/// an empty digest never matches a grant or a deferred hold.
std::string request_digest(const policy::Request& request, std::string_view body_sha256_hex);

} // namespace runwarden::approval
