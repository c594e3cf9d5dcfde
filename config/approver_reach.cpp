#include "config/approver_reach.hpp"

namespace runwarden::config {

std::vector<ApproverGap>
unmatched_approvers(const std::vector<std::shared_ptr<const policy::Runbook>>& runbooks,
                    const std::function<bool(std::string_view)>& known) {
  std::vector<ApproverGap> out;
  for (const auto& rb : runbooks) {
    if (!rb) {
      continue;
    }
    for (const auto& [name, action] : rb->actions) {
      std::size_t matched = 0;
      for (const auto& who : action.approvers) {
        if (known(who)) {
          ++matched;
        } else {
          out.push_back(ApproverGap{rb->name, name, who, action.mark});
        }
      }
      if (!action.approvers.empty() && matched == 0) {
        out.push_back(ApproverGap{rb->name, name, {}, action.mark});
      }
    }
  }
  return out;
}

std::optional<std::string> webhook_identity(std::string_view url) {
  std::string_view rest;
  if (url.starts_with("https://")) {
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else {
    return std::nullopt;
  }
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
  if (authority.find('@') != std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view host = authority;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return std::nullopt;
    }
    host = authority.substr(1, close - 1);
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
  }
  if (host.empty()) {
    return std::nullopt;
  }
  return "webhook:" + std::string(host);
}

} // namespace runwarden::config
