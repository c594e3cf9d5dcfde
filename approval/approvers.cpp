#include "approval/approvers.hpp"

#include <algorithm>

namespace runwarden::approval {

bool may_decide(const std::vector<std::string>& approvers, const Principal& who) {
  if (approvers.empty()) {
    return true;
  }
  const auto listed = [&approvers](const std::string& name) {
    return !name.empty() && std::find(approvers.begin(), approvers.end(), name) != approvers.end();
  };
  return listed(who.name) || std::any_of(who.groups.begin(), who.groups.end(), listed);
}

std::string describe_approvers(const std::vector<std::string>& approvers) {
  if (approvers.empty()) {
    return "any authenticated operator";
  }
  std::string out;
  for (const auto& a : approvers) {
    if (!out.empty()) {
      out += ", ";
    }
    out += a;
  }
  return out;
}

bool valid_principal_name(std::string_view name) {
  if (name.empty() || name.size() > 128) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '@';
  });
}

} // namespace runwarden::approval
