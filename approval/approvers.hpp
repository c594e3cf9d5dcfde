#pragma once
// Who may decide a hold (DESIGN §5, issue 5): a runbook action's `approvers` list names
// operators or groups. The rule is pure so the registry can apply it under its lock and
// tests can pin it without a network.

#include <string>
#include <string_view>
#include <vector>

namespace runwarden::approval {

/// The authenticated caller of the admin API: the identity from the credential (token-file
/// NAME or `webhook:<host>`) and the groups the tokens file gives it. Never from a body.
struct Principal {
  std::string name;
  std::vector<std::string> groups;
};

/// True when `approvers` is empty (any authenticated operator may decide, the behaviour
/// before approvers were enforced) or lists the principal's name or one of its groups.
/// Exact, case-sensitive comparison: `Payments` is not `payments`.
bool may_decide(const std::vector<std::string>& approvers, const Principal& who);

/// "payments-on-call, sre", or "any authenticated operator" when the list is empty: what
/// the CLI and error messages show as "who may approve".
std::string describe_approvers(const std::vector<std::string>& approvers);

/// Operator names and group names share one alphabet, `[A-Za-z0-9._@-]{1,128}`, so a
/// runbook's approvers entry means the same thing whichever it names.
bool valid_principal_name(std::string_view name);

} // namespace runwarden::approval
