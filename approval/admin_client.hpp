#pragma once
// A tiny blocking HTTP/1.1 client for the loopback admin API, used by
// `runwarden approvals ...` and `runwarden ctl ...`. Plain TCP (POSIX sockets), one
// request per connection, every step under a deadline. Not used on the data path.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace runwarden::approval {

struct AdminUrl {
  std::string host; // name or literal; IPv6 without brackets
  std::uint16_t port = 15000;
  std::string base; // path prefix without trailing '/', usually ""
};

/// Accepts "http://host[:port][/base]"; https and userinfo are refused (the admin
/// listener is loopback-only plain HTTP; tokens travel in a header).
std::optional<AdminUrl> parse_admin_url(std::string_view url, std::string* error);

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

class AdminClient {
public:
  AdminClient(AdminUrl url, std::string bearer_token,
              std::chrono::milliseconds timeout = std::chrono::seconds(10));

  /// Sends one request ("GET", "/v1/status", "") and reads the whole answer.
  /// Returns false with `error` set on a connection or protocol failure; an HTTP
  /// error status is a successful exchange (check `out.status`).
  bool request(std::string_view method, std::string_view path, std::string_view json_body,
               HttpResponse& out, std::string& error) const;

private:
  AdminUrl url_;
  std::string token_;
  std::chrono::milliseconds timeout_;
};

/// Percent-encodes everything but RFC 3986 unreserved characters: ids and run names in
/// paths cannot change the path's shape.
std::string encode_path_segment(std::string_view segment);

} // namespace runwarden::approval
