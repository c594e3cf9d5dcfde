// Request normalization (DESIGN §3): the engine matches, and the proxy forwards,
// only the canonical spelling produced here. Anything ambiguous is refused.
//
// Decisions worth knowing:
// - Empty path segments ("//") are collapsed: "/a//b" becomes "/a/b". The proxy
//   forwards the canonical path, so the upstream sees exactly what was matched.
// - A ".." that would climb above the root is refused (path_above_root), not clamped.
// - ';' is an ordinary character: "/v1/refunds;x" is a different path from
//   "/v1/refunds". Segments such as "..;x" or ".;x" are refused, because some
//   servers (Tomcat, Spring) strip the parameter and then treat them as dot-segments.
// - IPv4 literals must be strict dotted-quad; a host whose last label looks numeric
//   (decimal or 0x-hex) but is not strict dotted-quad ("127.1", "0x7f.0.0.1",
//   "017.0.0.1", "2130706433") is refused with bad_ip_literal rather than guessed at.

#include "policy/normalize.hpp"

#include "policy/hex.hpp"

#include <arpa/inet.h>
#include <array>
#include <cstdint>
#include <vector>

namespace runwarden::policy {
namespace {

bool is_unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

constexpr std::string_view kHex = "0123456789ABCDEF";

// A dot-segment in disguise: "." or ".." followed by a ';' parameter (raw or %3B).
bool is_dot_with_params(std::string_view seg) {
  std::size_t dots = 0;
  while (dots < seg.size() && seg[dots] == '.') {
    ++dots;
  }
  if (dots == 0 || dots > 2 || dots == seg.size()) {
    return false;
  }
  std::string_view rest = seg.substr(dots);
  return rest.front() == ';' || rest.starts_with("%3B");
}

bool looks_numeric_label(std::string_view label) {
  if (label.empty()) {
    return false;
  }
  if (label.size() >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X')) {
    for (char c : label.substr(2)) {
      if (hex_value(c) < 0) {
        return false;
      }
    }
    return true;
  }
  for (char c : label) {
    if (!is_digit(c)) {
      return false;
    }
  }
  return true;
}

bool strict_dotted_quad(std::string_view host) {
  int labels = 0;
  std::size_t pos = 0;
  while (true) {
    std::size_t dot = host.find('.', pos);
    std::string_view label =
        host.substr(pos, dot == std::string_view::npos ? host.npos : dot - pos);
    if (label.empty() || label.size() > 3 || (label.size() > 1 && label[0] == '0')) {
      return false;
    }
    int value = 0;
    for (char c : label) {
      if (!is_digit(c)) {
        return false;
      }
      value = value * 10 + (c - '0');
    }
    if (value > 255) {
      return false;
    }
    ++labels;
    if (dot == std::string_view::npos) {
      break;
    }
    pos = dot + 1;
  }
  return labels == 4;
}

NormalizeError normalize_ipv6(std::string_view raw, std::string& out) {
  if (raw.size() < 4 || raw.back() != ']') {
    return NormalizeError::bad_ip_literal;
  }
  std::string inner(raw.substr(1, raw.size() - 2));
  for (char c : inner) {
    // Zone identifiers ("%25eth0") and anything but hex, ':' and a trailing dotted quad.
    if (!(hex_value(c) >= 0 || c == ':' || c == '.')) {
      return NormalizeError::bad_ip_literal;
    }
  }
  std::array<unsigned char, 16> addr{};
  if (inet_pton(AF_INET6, inner.c_str(), addr.data()) != 1) {
    return NormalizeError::bad_ip_literal;
  }
  std::array<char, INET6_ADDRSTRLEN> text{};
  if (inet_ntop(AF_INET6, addr.data(), text.data(), static_cast<socklen_t>(text.size())) ==
      nullptr) {
    return NormalizeError::bad_ip_literal;
  }
  out.clear();
  out.push_back('[');
  out.append(text.data());
  out.push_back(']');
  return NormalizeError::ok;
}

} // namespace

std::string_view to_string(NormalizeError e) {
  switch (e) {
  case NormalizeError::ok:
    return "ok";
  case NormalizeError::bad_scheme:
    return "bad_scheme";
  case NormalizeError::empty_host:
    return "empty_host";
  case NormalizeError::non_ascii_host:
    return "non_ascii_host";
  case NormalizeError::bad_host:
    return "bad_host";
  case NormalizeError::bad_ip_literal:
    return "bad_ip_literal";
  case NormalizeError::bad_port:
    return "bad_port";
  case NormalizeError::userinfo:
    return "userinfo";
  case NormalizeError::bad_path:
    return "bad_path";
  case NormalizeError::encoded_slash:
    return "encoded_slash";
  case NormalizeError::encoded_nul:
    return "encoded_nul";
  case NormalizeError::bad_percent_escape:
    return "bad_percent_escape";
  case NormalizeError::path_above_root:
    return "path_above_root";
  case NormalizeError::bad_target:
    return "bad_target";
  }
  return "bad_target";
}

NormalizeError normalize_host(std::string_view raw, std::string& out) {
  if (raw.empty()) {
    return NormalizeError::empty_host;
  }
  if (raw.front() == '[') {
    return normalize_ipv6(raw, out);
  }
  for (char c : raw) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      return NormalizeError::non_ascii_host;
    }
  }
  std::string host;
  host.reserve(raw.size());
  for (char c : raw) {
    host.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  if (host.back() == '.') {
    host.pop_back();
  }
  if (host.empty()) {
    return NormalizeError::empty_host;
  }
  if (host.size() > 253) {
    return NormalizeError::bad_host;
  }
  std::size_t label_len = 0;
  for (char c : host) {
    if (c == '.') {
      if (label_len == 0) {
        return NormalizeError::bad_host;
      }
      label_len = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '_';
    if (!ok) {
      return NormalizeError::bad_host;
    }
    if (++label_len > 63) {
      return NormalizeError::bad_host;
    }
  }
  if (label_len == 0) {
    return NormalizeError::bad_host;
  }
  std::size_t last_dot = host.rfind('.');
  std::string_view last = last_dot == std::string::npos
                              ? std::string_view(host)
                              : std::string_view(host).substr(last_dot + 1);
  if (looks_numeric_label(last) && !strict_dotted_quad(host)) {
    return NormalizeError::bad_ip_literal;
  }
  out = std::move(host);
  return NormalizeError::ok;
}

NormalizeError normalize_path(std::string_view raw, std::string& out) {
  if (raw.empty() || raw.front() != '/') {
    return NormalizeError::bad_target;
  }
  // Pass 1: validate bytes, decode unreserved escapes, upper-case the rest. The working
  // buffers are per thread and keep their capacity: every request's target comes through.
  thread_local std::string decoded;
  thread_local std::vector<std::string_view> segs;
  decoded.clear();
  segs.clear();
  decoded.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    auto c = static_cast<unsigned char>(raw[i]);
    if (c == '%') {
      if (i + 2 >= raw.size()) {
        return NormalizeError::bad_percent_escape;
      }
      int hi = hex_value(raw[i + 1]);
      int lo = hex_value(raw[i + 2]);
      if (hi < 0 || lo < 0) {
        return NormalizeError::bad_percent_escape;
      }
      auto v = static_cast<unsigned char>(hi * 16 + lo);
      if (v == 0) {
        return NormalizeError::encoded_nul;
      }
      if (v == '/' || v == '\\') {
        return NormalizeError::encoded_slash;
      }
      if (is_unreserved(v)) {
        decoded.push_back(static_cast<char>(v));
      } else {
        decoded.push_back('%');
        decoded.push_back(kHex[static_cast<std::size_t>(hi)]);
        decoded.push_back(kHex[static_cast<std::size_t>(lo)]);
      }
      i += 2;
      continue;
    }
    if (c <= 0x20 || c >= 0x7f || c == '\\') {
      return NormalizeError::bad_path;
    }
    if (c == '?' || c == '#') {
      return NormalizeError::bad_target;
    }
    decoded.push_back(static_cast<char>(c));
  }
  // Pass 2: split, collapse empty segments, resolve dot-segments (RFC 3986 5.2.4).
  bool trailing_slash = false;
  std::string_view rest = std::string_view(decoded).substr(1);
  while (true) {
    std::size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    bool last = slash == std::string_view::npos;
    if (seg.empty()) {
      trailing_slash = last && !segs.empty();
    } else if (seg == ".") {
      trailing_slash = last;
    } else if (seg == "..") {
      if (segs.empty()) {
        return NormalizeError::path_above_root;
      }
      segs.pop_back();
      trailing_slash = last;
    } else if (is_dot_with_params(seg)) {
      return NormalizeError::bad_path;
    } else {
      segs.push_back(seg);
      trailing_slash = false;
    }
    if (last) {
      break;
    }
    rest = rest.substr(slash + 1);
  }
  out.clear();
  out.reserve(decoded.size());
  for (std::string_view seg : segs) {
    out.push_back('/');
    out.append(seg);
  }
  if (segs.empty() || trailing_slash) {
    out.push_back('/');
  }
  return NormalizeError::ok;
}

NormalizeError check_query(std::string_view raw) {
  for (std::size_t i = 0; i < raw.size(); ++i) {
    auto c = static_cast<unsigned char>(raw[i]);
    if (c == '%') {
      if (i + 2 >= raw.size() || hex_value(raw[i + 1]) < 0 || hex_value(raw[i + 2]) < 0) {
        return NormalizeError::bad_percent_escape;
      }
      if (raw[i + 1] == '0' && raw[i + 2] == '0') {
        return NormalizeError::encoded_nul;
      }
      i += 2;
      continue;
    }
    if (c <= 0x20 || c >= 0x7f || c == '#') {
      return NormalizeError::bad_target;
    }
  }
  return NormalizeError::ok;
}

bool percent_decode(std::string_view in, bool form, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) {
        return false;
      }
      int hi = hex_value(in[i + 1]);
      int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) {
        return false;
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (form && c == '+') {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

NormalizeError normalize_target(std::string_view raw_target, std::string& path,
                                std::string& query) {
  if (raw_target.empty() || raw_target.front() != '/') {
    return NormalizeError::bad_target;
  }
  if (raw_target.find('#') != std::string_view::npos) {
    return NormalizeError::bad_target;
  }
  std::size_t q = raw_target.find('?');
  std::string_view raw_query =
      q == std::string_view::npos ? std::string_view() : raw_target.substr(q + 1);
  if (NormalizeError e = check_query(raw_query); e != NormalizeError::ok) {
    return e;
  }
  // normalize_path writes `path` only once it succeeded; straight into it, its capacity kept.
  if (NormalizeError e = normalize_path(raw_target.substr(0, q), path); e != NormalizeError::ok) {
    return e;
  }
  query.assign(raw_query);
  return NormalizeError::ok;
}

NormalizeError normalize_absolute_url(std::string_view url, Request& out) {
  std::size_t sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0) {
    return NormalizeError::bad_target;
  }
  std::string scheme;
  for (char c : url.substr(0, sep)) {
    scheme.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  std::uint16_t default_port = 0;
  if (scheme == "http") {
    default_port = 80;
  } else if (scheme == "https") {
    default_port = 443;
  } else {
    return NormalizeError::bad_scheme;
  }
  std::string_view rest = url.substr(sep + 3);
  if (rest.find('#') != std::string_view::npos) {
    return NormalizeError::bad_target;
  }
  std::size_t auth_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, auth_end);
  std::string_view target =
      auth_end == std::string_view::npos ? std::string_view() : rest.substr(auth_end);
  if (authority.find('@') != std::string_view::npos) {
    return NormalizeError::userinfo;
  }
  std::string_view host_part = authority;
  std::string_view port_part;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return NormalizeError::bad_ip_literal;
    }
    host_part = authority.substr(0, close + 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return NormalizeError::bad_host;
      }
      has_port = true;
      port_part = after.substr(1);
    }
  } else if (std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host_part = authority.substr(0, colon);
    port_part = authority.substr(colon + 1);
    has_port = true;
  }
  std::uint16_t port = default_port;
  if (has_port) {
    if (port_part.empty() || port_part.size() > 5) {
      return NormalizeError::bad_port;
    }
    unsigned value = 0;
    for (char c : port_part) {
      if (!is_digit(c)) {
        return NormalizeError::bad_port;
      }
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value == 0 || value > 65535) {
      return NormalizeError::bad_port;
    }
    port = static_cast<std::uint16_t>(value);
  }
  std::string host;
  if (NormalizeError e = normalize_host(host_part, host); e != NormalizeError::ok) {
    return e;
  }
  std::string path = "/";
  std::string query;
  if (!target.empty()) {
    NormalizeError e = NormalizeError::ok;
    if (target.front() == '?') {
      std::string with_root = "/";
      with_root.append(target);
      e = normalize_target(with_root, path, query);
    } else {
      e = normalize_target(target, path, query);
    }
    if (e != NormalizeError::ok) {
      return e;
    }
  }
  out.scheme = std::move(scheme);
  out.host = std::move(host);
  out.port = port;
  out.path = std::move(path);
  out.query = std::move(query);
  return NormalizeError::ok;
}

} // namespace runwarden::policy
