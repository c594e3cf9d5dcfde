// Host patterns: exact canonical hosts and "*.suffix" wildcards.

#include "policy/model.hpp"
#include "policy/request.hpp"

namespace runwarden::policy {
namespace {

bool is_ip(const std::string& host) {
  if (!host.empty() && host.front() == '[') {
    return true;
  }
  for (char c : host) {
    if (!((c >= '0' && c <= '9') || c == '.')) {
      return false;
    }
  }
  return true;
}

} // namespace

std::optional<HostPattern> HostPattern::parse(std::string_view pattern, std::string* error) {
  HostPattern p;
  std::string_view host = pattern;
  if (pattern.starts_with("*.")) {
    p.wildcard_ = true;
    host = pattern.substr(2);
  }
  if (host.find('*') != std::string_view::npos) {
    if (error != nullptr) {
      *error = "host pattern may only use '*' as a leading \"*.\" label";
    }
    return std::nullopt;
  }
  std::string canon;
  if (NormalizeError e = normalize_host(host, canon); e != NormalizeError::ok) {
    if (error != nullptr) {
      *error = "invalid host \"" + std::string(host) + "\": " + std::string(policy::to_string(e));
    }
    return std::nullopt;
  }
  if (p.wildcard_ && is_ip(canon)) {
    if (error != nullptr) {
      *error = "a wildcard host pattern cannot name an IP address";
    }
    return std::nullopt;
  }
  p.host_ = std::move(canon);
  return p;
}

bool HostPattern::matches(std::string_view canonical_host) const {
  if (!wildcard_) {
    return canonical_host == host_;
  }
  return canonical_host.size() > host_.size() + 1 && canonical_host.ends_with(host_) &&
         canonical_host[canonical_host.size() - host_.size() - 1] == '.';
}

std::string HostPattern::to_string() const {
  return wildcard_ ? "*." + host_ : host_;
}

} // namespace runwarden::policy
