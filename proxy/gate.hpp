#pragma once
// The seam after a decision: what happens to a request the runbook says needs a human.
// For now holds are refused; the approvals module plugs in an asynchronous hold here.

#include "audit/audit_log.hpp"
#include "policy/engine.hpp"
#include "policy/request.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace runwarden::proxy {

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
};

/// May complete on any thread; the session posts the result to its own strand.
using HoldDone = std::function<void(HoldResult)>;

/// Plugged into the proxy at start-up; shared by every connection (must be thread-safe).
class Gate {
public:
  virtual ~Gate() = default;
  /// Called for Verdict::hold only. Must call done exactly once.
  virtual void hold(HoldRequest request, HoldDone done) = 0;
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
