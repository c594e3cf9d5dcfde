// Request helpers: URL rebuilding and header lookup on the canonical request.

#include "policy/request.hpp"

#include "policy/ascii.hpp"

namespace runwarden::policy {

std::string Request::target() const {
  std::string t = path.empty() ? std::string("/") : path;
  if (!query.empty()) {
    t.push_back('?');
    t.append(query);
  }
  return t;
}

std::string Request::url() const {
  std::string u = scheme;
  u.append("://");
  u.append(host);
  bool default_port =
      port == 0 || (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
  if (!default_port) {
    u.push_back(':');
    u.append(std::to_string(port));
  }
  u.append(target());
  return u;
}

const Header* Request::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) {
      return &h;
    }
  }
  return nullptr;
}

} // namespace runwarden::policy
