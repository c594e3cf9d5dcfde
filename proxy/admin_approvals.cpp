#include "proxy/admin_approvals.hpp"

#include "approval/clock.hpp"
#include "approval/hold_state.hpp"
#include "policy/ascii.hpp"
#include "policy/hex.hpp"
#include "proxy/approval_gate.hpp"
#include "proxy/log.hpp"

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace runwarden::proxy {
namespace {

using policy::iequals;

constexpr std::string_view kApprovals = "/v1/approvals/";

AdminResponse json_response(int status, const nlohmann::json& body) {
  AdminResponse r;
  r.status = status;
  r.body = body.dump();
  return r;
}

AdminResponse error(int status, std::string_view code, std::string_view reason = {}) {
  nlohmann::json j{{"error", code}};
  if (!reason.empty()) {
    j["reason"] = reason;
  }
  return json_response(status, j);
}

const std::string* header(const AdminRequest& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (iequals(k, name)) {
      return &v;
    }
  }
  return nullptr;
}

using policy::hex_value;

/// Percent-decodes one path segment; false on a bad escape, NUL or a '/'.
bool decode_segment(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) {
        return false;
      }
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) {
        return false;
      }
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (c == '\0' || c == '/') {
      return false;
    }
    out.push_back(c);
  }
  return !out.empty();
}

std::string query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    const std::size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string() : std::string(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) {
      break;
    }
    query.remove_prefix(amp + 1);
  }
  return {};
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) {
    out += (out.empty() ? "" : ",") + i;
  }
  return out;
}

/// 403 for a caller outside the action's approvers: nothing changed. Logged, and written to
/// the audit log (an attempt to release a gated call is an auditor's business too).
AdminResponse not_an_approver(ApprovalGate& gate, const approval::HoldView& hold,
                              approval::Choice choice, const approval::Principal& by) {
  const std::vector<std::string> none;
  const auto& approvers = hold.packet ? hold.packet->approvers : none;
  log_event(LogLevel::warn, "approval_not_an_approver", 0,
            hold.packet ? hold.packet->request_id : std::string(),
            {{"approval", hold.id},
             {"choice", approval::to_string(choice)},
             {"by", by.name},
             {"groups", joined(by.groups)},
             {"approvers", joined(approvers)}});
  gate.record_refused_decision(hold, choice, by);
  nlohmann::json j{{"error", "not_an_approver"},
                   {"reason", "approval " + hold.id + " may be decided only by " +
                                  approval::describe_approvers(approvers) + "; \"" + by.name +
                                  "\" is not one of them and is in none of those groups"},
                   {"approval_id", hold.id},
                   {"approvers", approvers},
                   {"by", by.name},
                   {"groups", by.groups}};
  return json_response(403, j);
}

/// A hold that was still pending when runwarden last stopped (replayed from the journal at
/// start-up, recorded as approval.expired_on_restart): an operator following the old
/// webhook link sees that it expired, not "not found".
std::optional<nlohmann::json> recovered_json(const ApprovalGate& gate, const std::string& id) {
  for (const auto& h : gate.recovered()) {
    if (h.id == id) {
      return nlohmann::json{{"id", h.id},
                            {"state", "expired"},
                            {"by", "restart"},
                            {"reason", "pending when runwarden stopped; nothing was released"},
                            {"created", h.created},
                            {"run", h.run},
                            {"agent", h.agent},
                            {"runbook", h.runbook},
                            {"action", h.action},
                            {"request_id", h.request_id}};
    }
  }
  return std::nullopt;
}

} // namespace

AdminAuth::AdminAuth(approval::OperatorTokens tokens, std::vector<approval::SignatureKey> keys)
    : tokens_(std::move(tokens)), verifier_(keys), have_keys_(!keys.empty()) {}

AdminIdentity AdminAuth::authenticate(const AdminRequest& request) {
  AdminIdentity id;
  if (const std::string* auth = header(request, "authorization")) {
    if (auto who = tokens_.identify_header(*auth)) {
      id.name = std::move(who->name);
      id.groups = std::move(who->groups);
    } else {
      id.error = "bad_token";
    }
    return id;
  }
  const std::string* sig = header(request, "runwarden-signature");
  if (sig == nullptr) {
    id.error = "missing_credentials";
    return id;
  }
  if (!have_keys_) {
    id.error = "signature_not_configured";
    return id;
  }
  // A read carries no body, so its signature covers "t." alone; every webhook delivery has
  // one. A signed GET/HEAD with a body is a delivery replayed (from another process's
  // cache, or a sidecar sharing the secret) to read the packets: refused whatever the
  // replay cache holds.
  if ((request.method == "GET" || request.method == "HEAD") && !request.body.empty()) {
    id.error = "signed_read_with_body";
    return id;
  }
  const auto v =
      verifier_.verify(*sig, request.body, approval::unix_seconds(approval::system_clock().wall()));
  if (v.error != approval::SignatureError::ok) {
    id.error = std::string(approval::to_string(v.error));
    return id;
  }
  id.name = v.signer;
  return id;
}

void add_approval_routes(AdminRouter& router, std::shared_ptr<ApprovalGate> gate,
                         std::shared_ptr<AdminAuth> auth) {
  // Every route authenticates first; a refusal changes nothing.
  auto guarded = [auth](auto handler) {
    return [auth, handler](const AdminRequest& req) -> AdminResponse {
      AdminIdentity who = auth->authenticate(req);
      if (!who.name) {
        log_event(LogLevel::warn, "admin_unauthorized", 0, {},
                  {{"path", req.path}, {"error", who.error}});
        AdminResponse r = error(401, "unauthorized", who.error);
        return r;
      }
      return handler(req, approval::Principal{std::move(*who.name), std::move(who.groups)});
    };
  };

  router.add("GET", "/v1/approvals",
             guarded([gate](const AdminRequest& req, const approval::Principal&) -> AdminResponse {
               const std::string state = query_param(req.query, "state");
               std::optional<approval::HoldState> filter;
               if (!state.empty() && state != "all") {
                 filter = approval::parse_hold_state(state);
                 if (!filter) {
                   return error(400, "bad_state", "state must be all or a hold state");
                 }
               }
               nlohmann::json list = nlohmann::json::array();
               for (const auto& h : gate->registry().list(filter)) {
                 list.push_back(h.to_json(false));
               }
               return json_response(200, {{"approvals", std::move(list)}});
             }));

  router.add_prefix(
      "GET", std::string(kApprovals),
      guarded([gate](const AdminRequest& req, const approval::Principal&) -> AdminResponse {
        std::string id;
        if (!decode_segment(std::string_view(req.path).substr(kApprovals.size()), id)) {
          return error(404, "not_found");
        }
        auto h = gate->registry().get(id);
        if (!h) {
          if (auto old = recovered_json(*gate, id)) {
            return json_response(200, *old);
          }
          return error(404, "not_found");
        }
        return json_response(200, h->to_json(true));
      }));

  router.add_prefix(
      "POST", std::string(kApprovals),
      guarded([gate](const AdminRequest& req, const approval::Principal& by) -> AdminResponse {
        std::string_view rest = std::string_view(req.path).substr(kApprovals.size());
        const std::size_t slash = rest.find('/');
        if (slash == std::string_view::npos) {
          return error(404, "not_found");
        }
        const std::string_view verb = rest.substr(slash + 1);
        approval::Choice choice = approval::Choice::approve;
        if (verb == "approve") {
          choice = approval::Choice::approve;
        } else if (verb == "deny") {
          choice = approval::Choice::deny;
        } else {
          return error(404, "not_found");
        }
        std::string id;
        if (!decode_segment(rest.substr(0, slash), id)) {
          return error(404, "not_found");
        }
        // {"reason"}; "by" is accepted and ignored by design (the credential names the
        // approver).
        std::map<std::string, std::string, std::less<>> fields;
        std::string why;
        if (!parse_admin_body(req.body, {"by", "reason"}, fields, why)) {
          return error(400, "bad_body", why);
        }
        const std::string reason = fields["reason"];
        auto result = gate->registry().decide(id, choice, by, reason);
        switch (result.error) {
        case approval::DecideError::not_found:
          if (auto old = recovered_json(*gate, id)) {
            // Pending when runwarden last stopped: it ended then, nothing can release it.
            return json_response(409, {{"error", "conflict"},
                                       {"reason", "approval already ended expired (pending when "
                                                  "runwarden stopped; nothing was released)"},
                                       {"approval", *old}});
          }
          return error(404, "not_found");
        case approval::DecideError::forbidden:
          return not_an_approver(*gate, *result.hold, choice, by);
        case approval::DecideError::conflict: {
          nlohmann::json j{{"error", "conflict"},
                           {"reason", "approval already ended " +
                                          std::string(approval::to_string(result.hold->state))}};
          j["approval"] = result.hold->to_json(false);
          return json_response(409, j);
        }
        case approval::DecideError::ok:
          break;
        }
        log_event(LogLevel::info, "approval_decided", 0, {},
                  {{"approval", id},
                   {"choice", approval::to_string(choice)},
                   {"by", by.name},
                   {"changed", result.changed ? "yes" : "no"}});
        nlohmann::json j = result.hold->to_json(false);
        j["changed"] = result.changed;
        return json_response(200, j);
      }));
}

} // namespace runwarden::proxy
