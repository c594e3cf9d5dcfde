#include "proxy/admin_router.hpp"

#include <nlohmann/json.hpp>

namespace runwarden::proxy {
namespace {

AdminResponse json_error(int status, std::string_view code) {
  AdminResponse r;
  r.status = status;
  r.body = nlohmann::json{{"error", code}}.dump();
  return r;
}

} // namespace

void AdminRouter::add(std::string method, std::string path, AdminHandler handler) {
  exact_[{std::move(method), std::move(path)}] = std::move(handler);
}

void AdminRouter::add_prefix(std::string method, std::string prefix, AdminHandler handler) {
  prefix_.push_back({{std::move(method), std::move(prefix)}, std::move(handler)});
}

AdminResponse AdminRouter::handle(const AdminRequest& request) const {
  auto it = exact_.find({request.method, request.path});
  if (it != exact_.end()) {
    return it->second(request);
  }
  for (const auto& [key, handler] : prefix_) {
    if (key.first == request.method && request.path.rfind(key.second, 0) == 0) {
      return handler(request);
    }
  }
  for (const auto& [key, handler] : exact_) {
    if (key.second == request.path) {
      return json_error(405, "method_not_allowed");
    }
  }
  return json_error(404, "not_found");
}

} // namespace runwarden::proxy
