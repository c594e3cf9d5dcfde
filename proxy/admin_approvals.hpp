#pragma once
// The approvals admin API (DESIGN §5) on listen.admin: list, show, approve, deny. Every
// call is authenticated by an operator bearer token or a
// Runwarden-Signature signed with a webhook secret; the approver identity comes from that
// credential only. Unauthenticated: 401 and nothing changes.

#include "approval/operator_tokens.hpp"
#include "approval/signature.hpp"
#include "proxy/admin_router.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace runwarden::proxy {

class ApprovalGate;

/// Who is calling, or why not.
struct AdminIdentity {
  std::optional<std::string> name; // approver identity when authenticated
  std::vector<std::string> groups; // from the tokens file; a runbook's approvers may name them
  std::string error;               // "missing_credentials", "bad_token", "signature_stale", ...
};

class AdminAuth {
public:
  AdminAuth(approval::OperatorTokens tokens, std::vector<approval::SignatureKey> keys);
  /// Bearer token first (if an Authorization header is present), else the signature.
  AdminIdentity authenticate(const AdminRequest& request);
  /// The replay cache that also holds the signatures of outbound webhooks (spend).
  approval::SignatureVerifier& verifier() { return verifier_; }

private:
  approval::OperatorTokens tokens_;
  approval::SignatureVerifier verifier_;
  bool have_keys_ = false;
};

/// Adds /v1/approvals, /v1/approvals/{id} and /v1/approvals/{id}/approve|deny. `gate` and `auth`
/// live as long as the router.
void add_approval_routes(AdminRouter& router, std::shared_ptr<ApprovalGate> gate,
                         std::shared_ptr<AdminAuth> auth);

} // namespace runwarden::proxy
