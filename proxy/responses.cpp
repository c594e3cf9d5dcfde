#include "proxy/responses.hpp"

#include <nlohmann/json.hpp>

namespace runwarden::proxy {
namespace {

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string call_code(const policy::JsonRpcCall& call, const policy::Decision& decision,
                      std::string_view fallback_code) {
  switch (call.verdict) {
  case policy::Verdict::allow:
    return "batch_refused";
  case policy::Verdict::hold:
    return "approval_required";
  case policy::Verdict::paused:
    return "runwarden_paused";
  case policy::Verdict::deny:
    break;
  }
  // A single call's code is the decision's; so is a whole body's refusal for its path.
  if ((!decision.jsonrpc_batch && !decision.code.empty()) ||
      decision.code == "ambiguous_path_parameters") {
    return decision.code;
  }
  if (call.action.empty()) {
    return "unmatched";
  }
  return fallback_code.empty() ? "denied_by_runbook" : std::string(fallback_code);
}

} // namespace

int retry_after_seconds(std::string_view code) {
  if (code == "runwarden_paused" || code == "audit_unavailable" ||
      code == "interception_unavailable") {
    return 30; // an operator acts (the CA is read at start-up)
  }
  return 1;
}

std::string error_body(std::string_view code, std::string_view reason,
                       std::string_view request_id) {
  nlohmann::json j;
  j["error"] = code;
  j["reason"] = reason;
  if (!request_id.empty()) {
    j["request_id"] = request_id;
  }
  return dump(j);
}

std::string decision_body(std::string_view code, const policy::Decision& decision,
                          std::string_view reason, std::string_view request_id) {
  nlohmann::json j;
  // DESIGN §4: every refusal by the runbook is "denied_by_runbook"; the precise reason code
  // (unmatched, not_in_runbook, body_too_large, read_only_mode, ...) rides beside it.
  if (decision.verdict == policy::Verdict::deny) {
    j["error"] = "denied_by_runbook";
    j["code"] = code;
  } else {
    j["error"] = code;
  }
  j["runbook"] = decision.runbook;
  j["action"] = decision.action;
  j["reason"] = reason;
  j["request_id"] = request_id;
  if (decision.approval != nullptr) {
    const auto& a = *decision.approval;
    nlohmann::json approval;
    approval["risk"] = a.risk;
    approval["effect"] = a.effect;
    approval["rollback"] = a.rollback;
    approval["approvers"] = a.approvers;
    if (a.timeout) {
      approval["timeout_ms"] = a.timeout->count();
    }
    j["approval"] = approval;
  }
  return dump(j);
}

std::string jsonrpc_refusal_body(const policy::Decision& decision, std::string_view fallback_code,
                                 std::string_view request_id) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& call : decision.jsonrpc) {
    if (call.id.is_null()) {
      continue;
    }
    std::string code = call_code(call, decision, fallback_code);
    std::string reason = call.reason;
    if (call.verdict == policy::Verdict::allow) {
      reason = "another call in this batch was refused; nothing in the batch was forwarded";
    } else if (reason.empty()) {
      reason = decision.reason;
    }
    const std::string error =
        call.verdict == policy::Verdict::deny ? std::string("denied_by_runbook") : code;
    nlohmann::json err;
    err["jsonrpc"] = "2.0";
    err["id"] = call.id;
    err["error"] = {{"code", -32001},
                    {"message", error + ": " + reason},
                    {"data",
                     {{"error", error},
                      {"code", code},
                      {"runbook", decision.runbook},
                      {"action", call.action.empty() ? decision.action : call.action},
                      {"request_id", request_id}}}};
    out.push_back(std::move(err));
  }
  if (out.empty()) {
    return {};
  }
  if (!decision.jsonrpc_batch && out.size() == 1) {
    return dump(out[0]);
  }
  return dump(out);
}

} // namespace runwarden::proxy
