#include "proxy/admin_router.hpp"

#include "policy/hex.hpp"

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

bool decode_path_segment(std::string_view in, std::string& out, bool allow_slash,
                         std::string& why) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      const int hi = i + 2 < in.size() ? policy::hex_value(in[i + 1]) : -1;
      const int lo = i + 2 < in.size() ? policy::hex_value(in[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        why = "bad percent-escape at byte " + std::to_string(i) +
              " of the path segment (expected %XX with two hex digits)";
        return false;
      }
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (c == '\0') {
      why = "the path segment decodes to a NUL byte";
      return false;
    }
    if (c == '/' && !allow_slash) {
      why = "the path segment decodes to a '/'";
      return false;
    }
    out.push_back(c);
  }
  if (out.empty()) {
    why = "empty path segment";
    return false;
  }
  return true;
}

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
