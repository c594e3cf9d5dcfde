#pragma once
// Routes of the admin listener (listen.admin). Pure: no sockets here, so the approvals and
// operations work can add routes and test them without a network.

#include <functional>
#include <initializer_list>
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
  std::vector<std::pair<std::string, std::string>> headers; // more fields (Allow on a 405)
};

using AdminHandler = std::function<AdminResponse(const AdminRequest&)>;

/// Exact-path routes, plus prefix routes ("/v1/approvals/") for paths with ids.
class AdminRouter {
public:
  void add(std::string method, std::string path, AdminHandler handler);
  void add_prefix(std::string method, std::string prefix, AdminHandler handler);
  /// 404 for an unknown path, 405 (with Allow) for a known path with another method. HEAD
  /// is answered by the GET route (the session sends the head only).
  AdminResponse handle(const AdminRequest& request) const;

private:
  const AdminHandler* find(std::string_view method, const std::string& path) const;

  std::map<std::pair<std::string, std::string>, AdminHandler> exact_;
  std::vector<std::pair<std::pair<std::string, std::string>, AdminHandler>> prefix_;
};

/// Percent-decodes one path segment, the inverse of the CLI's encode_path_segment (every
/// byte outside RFC 3986's unreserved set arrives as %XX). Returns false with `why` set on a
/// truncated or non-hex escape, a NUL, an empty result, or a '/' unless `allow_slash`: a run
/// id may contain one (it is any Runwarden-Run value), an approval id never does.
bool decode_path_segment(std::string_view in, std::string& out, bool allow_slash, std::string& why);

/// The JSON body of a mutating call: empty means {}; else one JSON object, read strictly (a
/// duplicate key is refused, as on the data plane: `{"mode":"paused","mode":"normal"}` has
/// no one meaning), whose keys are all in `keys` and whose values are strings of at most
/// 4,096 bytes. Each key found goes into `out`. False with `why` (the 400's reason) otherwise:
/// an unknown key is refused, not ignored, so a body meant for another call (a webhook's
/// envelope, say) never passes for this one.
bool parse_admin_body(std::string_view body, std::initializer_list<std::string_view> keys,
                      std::map<std::string, std::string, std::less<>>& out, std::string& why);

} // namespace runwarden::proxy
