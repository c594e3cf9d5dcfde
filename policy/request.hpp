#pragma once
// The canonical request: what the engine matches and what the proxy forwards.
// Built only through normalize_*; a request that cannot be normalized is refused.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::policy {

struct Header {
  std::string name; // as received (matching is case-insensitive)
  std::string value;
};

struct Request {
  std::string scheme; // "http" | "https"
  std::string host;   // canonical: lower-case, no trailing dot, IPv6 in brackets
  std::uint16_t port = 0;
  std::string method; // as received (methods are case-sensitive, RFC 9110)
  std::string path; // canonical: starts with '/', dot-segments resolved, unreserved escapes decoded
  std::string query; // raw, without '?'; may be empty
  std::vector<Header> headers;
  std::string body;          // the inspected body (at most the inspect limit)
  bool body_complete = true; // false: body is longer than the inspect limit; body holds a prefix

  /// "scheme://host[:port]/path[?query]" with the port omitted when default.
  std::string url() const;
  /// The same URL appended to `out` (a string reused per request keeps its capacity).
  void append_url(std::string& out) const;
  /// Path plus "?query" when present: the origin-form target that is forwarded.
  std::string target() const;
  void append_target(std::string& out) const;
  /// First header with this name (case-insensitive), or nullptr.
  const Header* header(std::string_view name) const;
};

/// Why a URL or host could not be made canonical. Each is refused with 400.
enum class NormalizeError : std::uint8_t {
  ok,
  bad_scheme,
  empty_host,
  non_ascii_host,
  bad_host,
  bad_ip_literal,
  bad_port,
  userinfo,
  bad_path,
  encoded_slash, // %2F or %5C in the path
  encoded_nul,   // %00 anywhere in the target
  bad_percent_escape,
  path_above_root, // "/../x" is refused rather than clamped
  bad_target,
};
std::string_view to_string(NormalizeError e);

/// Canonical host: lower-cased, trailing dot removed, IPv4 in strict dotted-quad
/// (no octal, hex, or short forms), IPv6 in brackets and RFC 5952 form.
NormalizeError normalize_host(std::string_view raw, std::string& out);

/// Canonical path of an origin-form target ("/a/./b/../c?x=1"): fills path and query.
NormalizeError normalize_target(std::string_view raw_target, std::string& path, std::string& query);

/// Splits an absolute-form URI ("http://Host:80/p?q") into a canonical request's
/// scheme, host, port, path and query. Userinfo is refused.
NormalizeError normalize_absolute_url(std::string_view url, Request& out);

} // namespace runwarden::policy
