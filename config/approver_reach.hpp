#pragma once
// Who can actually decide a runbook's holds (DESIGN §5): an `approvers` entry names an
// operator, a tokens-file group or a webhook identity (`webhook:<host>`). An entry nobody
// matches can never decide; an action none of whose entries match can only have its holds
// time out (deny). Pure, so `runwarden check` and `serve` (its start-up warning) reach the
// same verdict from the same inputs.

#include "policy/model.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::config {

/// One approvers entry nobody matches (`approver` set), or an action none of whose entries
/// match (`approver` empty: its holds are unreachable).
struct ApproverGap {
  std::string runbook;
  std::string action;
  std::string approver;
  policy::SourceMark mark; // the action's entry in the runbook (line 0: not known)
};

/// Every gap, runbook by runbook in the given order, actions in name order; per action its
/// unknown entries first, then the action itself when none matched. An action with no
/// approvers (any operator may decide) has none. `known(name)` is true when some operator,
/// token-file group or webhook identity is called `name` (exact, case-sensitive).
std::vector<ApproverGap>
unmatched_approvers(const std::vector<std::shared_ptr<const policy::Runbook>>& runbooks,
                    const std::function<bool(std::string_view)>& known);

/// The identity a webhook's signed inbound calls act as: "webhook:" + the URL's host, as
/// written (an IPv6 literal without its brackets). nullopt when the URL is not http(s), has
/// userinfo or has no host (serve refuses such a webhook at start-up).
std::optional<std::string> webhook_identity(std::string_view url);

} // namespace runwarden::config
