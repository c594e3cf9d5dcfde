// Request helpers: URL rebuilding and header lookup on the canonical request.

#include "policy/request.hpp"

#include "policy/ascii.hpp"

#include <charconv>
#include <iterator>

namespace runwarden::policy {

std::string Request::target() const {
  std::string t;
  t.reserve(path.size() + query.size() + 2);
  append_target(t);
  return t;
}

void Request::append_target(std::string& out) const {
  if (path.empty()) {
    out.push_back('/');
  } else {
    out.append(path);
  }
  if (!query.empty()) {
    out.push_back('?');
    out.append(query);
  }
}

std::string Request::url() const {
  std::string u;
  append_url(u);
  return u;
}

void Request::append_url(std::string& out) const {
  const bool default_port =
      port == 0 || (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
  // One allocation at most: scheme "://" host ":65535" path "?" query.
  out.reserve(out.size() + scheme.size() + host.size() + path.size() + query.size() + 12);
  out.append(scheme);
  out.append("://");
  out.append(host);
  if (!default_port) {
    char digits[8];
    const auto [end, ec] = std::to_chars(std::begin(digits), std::end(digits), port);
    out.push_back(':');
    out.append(digits, end);
  }
  append_target(out);
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
