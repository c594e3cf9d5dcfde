#pragma once
// The decision engine: a pure function of (canonical request, runbook, mode).
// It never does I/O, reads no clock and logs nothing. The proxy acts on its Decision.

#include "policy/model.hpp"
#include "policy/request.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace runwarden::policy {

enum class Mode : std::uint8_t { normal, read_only, paused };
std::string_view to_string(Mode m);
std::optional<Mode> parse_mode(std::string_view s);

enum class Verdict : std::uint8_t {
  allow,  // forward
  deny,   // 403 denied_by_runbook (or 400 for a request that cannot be judged)
  hold,   // approval_required: wait for a human
  paused, // 503 runwarden_paused
};
std::string_view to_string(Verdict v);

/// A JSON-RPC call found in the body (one per batch element).
struct JsonRpcCall {
  nlohmann::json id; // null for notifications
  std::string method;
  std::string tool;   // params.name for tools/call
  std::string action; // the action that decided this element ("" if unmatched)
  std::optional<ActionClass> cls;
  Verdict verdict = Verdict::deny;
  std::string reason;
};

struct Decision {
  Verdict verdict = Verdict::deny;
  /// Machine-readable reason code: "allowed", "denied_by_runbook", "unmatched",
  /// "not_in_runbook", "read_only_mode", "runwarden_paused", "body_not_json",
  /// "body_too_large", "body_duplicate_key", "body_invalid_utf8", "body_too_deep",
  /// "body_number_out_of_range", "approval_required", ...
  std::string code;
  std::string reason; // one precise human sentence naming the rule (file:line)
  std::string runbook;
  std::string runbook_sha256;
  std::string action; // deciding action; "" when nothing matched
  std::optional<ActionClass> cls;
  std::vector<std::string> matched_actions; // every action that matched
  /// For holds: what the approver sees (risk, effect, rollback, approvers, timeout).
  const RunbookAction* approval = nullptr;
  /// Non-empty when the body is JSON-RPC (MCP): one entry per call, in order.
  std::vector<JsonRpcCall> jsonrpc;
  bool jsonrpc_batch = false;
};

/// Limits on what the engine will parse. Anything beyond is denied, never skipped.
struct EngineLimits {
  std::size_t max_json_depth = 64;
  std::size_t inspect_body_bytes = 1 << 20;
};

/// How each condition of one matcher fared, for `runwarden explain`.
struct ConditionResult {
  std::string condition; // e.g. "host logs.internal", "body /amount lte 5000"
  bool held = false;
  std::string detail; // why not, when it did not hold
};
struct MatcherExplanation {
  std::string action;
  std::optional<ActionClass> cls; // nullopt: in catalogue but not in the runbook
  bool diagnostics = false;       // listed only under the runbook's diagnostics (so read_only)
  SourceMark mark;
  bool matched = false;
  std::vector<ConditionResult> conditions;
};

/// An immutable, indexed policy: catalogue + runbooks. Shared as shared_ptr<const Engine>;
/// a reload builds a new one and swaps it.
class Engine {
public:
  Engine(std::shared_ptr<const Catalogue> catalogue,
         std::vector<std::shared_ptr<const Runbook>> runbooks, EngineLimits limits = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Decide one canonical request under the named runbook and mode.
  /// An unknown runbook name denies ("unknown_runbook"). A path with ";parameters" is
  /// judged as sent and as a server that drops them reads it (Tomcat, Spring and Jetty
  /// route "/a;x/b" as "/a/b"): when the two differ, it is denied
  /// ("ambiguous_path_parameters"); one denied as sent keeps its own denial.
  Decision decide(const Request& req, std::string_view runbook, Mode mode) const;

  /// Every matcher that matched or nearly matched (same host and method), with
  /// each condition's outcome. Pure; used by `runwarden explain`.
  std::vector<MatcherExplanation> explain(const Request& req, std::string_view runbook) const;

  const Runbook* runbook(std::string_view name) const;
  const Catalogue& catalogue() const;
  const std::vector<std::shared_ptr<const Runbook>>& runbooks() const;

private:
  struct Index;
  Decision decide_as_read(const Request& req, std::string_view runbook, Mode mode) const;
  std::shared_ptr<const Catalogue> catalogue_;
  std::vector<std::shared_ptr<const Runbook>> runbooks_;
  EngineLimits limits_;
  std::unique_ptr<Index> index_;
};

} // namespace runwarden::policy
