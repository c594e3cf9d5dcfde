#pragma once
// Routes of the admin listener (listen.admin). Pure: no sockets here, so the approvals and
// operations work can add routes and test them without a network.

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace runwarden::proxy {

struct AdminRequest {
  std::string method; // "GET", "POST", ...
  std::string path;   // without the query
  std::string query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

using AdminHandler = std::function<AdminResponse(const AdminRequest&)>;

/// Exact-path routes, plus prefix routes ("/v1/approvals/") for paths with ids.
class AdminRouter {
public:
  void add(std::string method, std::string path, AdminHandler handler);
  void add_prefix(std::string method, std::string prefix, AdminHandler handler);
  /// 404 for an unknown path, 405 for a known path with another method.
  AdminResponse handle(const AdminRequest& request) const;

private:
  std::map<std::pair<std::string, std::string>, AdminHandler> exact_;
  std::vector<std::pair<std::pair<std::string, std::string>, AdminHandler>> prefix_;
};

/// Percent-decodes one path segment, the inverse of the CLI's encode_path_segment (every
/// byte outside RFC 3986's unreserved set arrives as %XX). Returns false with `why` set on a
/// truncated or non-hex escape, a NUL, an empty result, or a '/' unless `allow_slash`: a run
/// id may contain one (it is any Runwarden-Run value), an approval id never does.
bool decode_path_segment(std::string_view in, std::string& out, bool allow_slash, std::string& why);

} // namespace runwarden::proxy
