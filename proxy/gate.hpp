#pragma once
// The seam after a decision: what happens to a request the runbook says needs a human.
// RefuseHolds answers 403 at once; ApprovalGate (approval_gate.hpp) really holds.

#include "approval/packet_redactor.hpp"
#include "audit/audit_log.hpp"
#include "policy/engine.hpp"
#include "policy/request.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace runwarden::proxy {

/// The code (and audit outcome) of a hold ended because runwarden shut down: the agent is
/// answered 503, since the same request may be retried once runwarden is back.
inline constexpr std::string_view kShutdownCode = "approval_shutdown";

/// What the proxy knows about a request that must wait for approval.
struct HoldRequest {
  std::string request_id;
  std::string run;
  std::string agent;
  std::string client; // peer address of the agent connection
  policy::Request request;
  policy::Decision decision;
};

/// How a hold ended. approved: forward; otherwise answer 403 with `code`.
struct HoldResult {
  bool approved = false;
  std::string code = "approval_required"; // approval_denied, approval_timeout, ...
  std::string reason;
  std::optional<audit::ApprovalInfo> approval;
  std::string approval_id;                         // shown to the agent when not approved
  std::optional<std::chrono::seconds> retry_after; // approval_pending: Retry-After
  /// The audit outcome for a refusal (approval_denied, approval_timeout, approval_pending,
  /// client_gone, refused); empty: derived from `code`.
  std::string outcome;
  /// Kept by the session until the agent's answer is written (or the approved request is
  /// forwarded): a drain waits while any is alive (ApprovalGate::unanswered). May be null.
  std::shared_ptr<const void> answering;
};

/// May complete on any thread; the session posts the result to its own strand.
using HoldDone = std::function<void(HoldResult)>;

/// Plugged into the proxy at start-up; shared by every connection (must be thread-safe).
class Gate {
public:
  virtual ~Gate() = default;
  /// Called for Verdict::hold only. Must call done exactly once.
  virtual void hold(HoldRequest request, HoldDone done) = 0;
  /// The agent's connection closed while its request `request_id` was held: the hold ends
  /// abandoned and nothing is ever forwarded (done is still called, with client_gone).
  virtual void abandon(const std::string& request_id) { (void)request_id; }
  /// Kill switch for one run: its pending holds end denied. Returns how many.
  virtual std::size_t kill_run(const std::string& run, const std::string& by) {
    (void)run;
    (void)by;
    return 0;
  }
  /// Paused mode: every pending hold ends denied. Returns how many.
  virtual std::size_t pause_all(const std::string& by) {
    (void)by;
    return 0;
  }
  /// Every judged call, whatever its outcome, for the run history shown in approval packets.
  virtual void observe(const std::string& run, const std::string& request_id,
                       const std::string& action, const std::string& outcome,
                       const std::string& method, const std::string& url) {
    (void)run, (void)request_id, (void)action, (void)outcome, (void)method, (void)url;
  }
  /// A reload changed `redaction:`: the packets of holds asked for from now on are redacted
  /// with `redactor`. A gate that builds no packets has nothing to change.
  virtual void set_packet_redactor(std::shared_ptr<const approval::PacketRedactor> redactor) {
    (void)redactor;
  }
};

/// v1 behaviour: a request that needs approval is answered 403 approval_required at once.
class RefuseHolds final : public Gate {
public:
  void hold(HoldRequest request, HoldDone done) override {
    HoldResult result;
    result.reason = request.decision.reason;
    done(std::move(result));
  }
};

} // namespace runwarden::proxy
