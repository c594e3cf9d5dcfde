#include "proxy/admin_router.hpp"

#include "policy/hex.hpp"
#include "policy/strict_json.hpp"

#include <algorithm>
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

const AdminHandler* AdminRouter::find(std::string_view method, const std::string& path) const {
  auto it = exact_.find({std::string(method), path});
  if (it != exact_.end()) {
    return &it->second;
  }
  for (const auto& [key, handler] : prefix_) {
    if (key.first == method && path.rfind(key.second, 0) == 0) {
      return &handler;
    }
  }
  return nullptr;
}

AdminResponse AdminRouter::handle(const AdminRequest& request) const {
  const bool head = request.method == "HEAD";
  if (const AdminHandler* h = find(head ? "GET" : request.method, request.path)) {
    return (*h)(request);
  }
  std::string allow;
  for (const char* method : {"GET", "POST", "PUT", "PATCH", "DELETE"}) {
    if (find(method, request.path) != nullptr) {
      allow += allow.empty() ? method : std::string(", ") + method;
      if (std::string_view(method) == "GET") {
        allow += ", HEAD";
      }
    }
  }
  if (!allow.empty()) {
    AdminResponse r = json_error(405, "method_not_allowed");
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  return json_error(404, "not_found");
}

bool parse_admin_body(std::string_view body, std::initializer_list<std::string_view> keys,
                      std::map<std::string, std::string, std::less<>>& out, std::string& why) {
  constexpr std::size_t kMaxValue = 4096;
  out.clear();
  if (body.empty()) {
    return true;
  }
  policy::StrictJsonResult parsed = policy::parse_strict_json(body, 8);
  if (parsed.error != policy::JsonError::ok) {
    why = "the body is not valid JSON (" + std::string(policy::to_code(parsed.error)) +
          (parsed.detail.empty() ? "" : ": " + parsed.detail) + ")";
    return false;
  }
  if (!parsed.value.is_object()) {
    why = "the body must be a JSON object";
    return false;
  }
  for (const auto& [key, value] : parsed.value.items()) {
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      std::string known;
      for (std::string_view k : keys) {
        known += (known.empty() ? "\"" : ", \"") + std::string(k) + "\"";
      }
      why = "unknown key \"" + key + "\" (this call takes " +
            (known.empty() ? std::string("no body") : known) + ")";
      return false;
    }
    if (!value.is_string()) {
      why = "\"" + key + "\" must be a string";
      return false;
    }
    std::string text = value.get<std::string>();
    if (text.size() > kMaxValue) {
      why = "\"" + key + "\" is " + std::to_string(text.size()) + " bytes, over the " +
            std::to_string(kMaxValue) + "-byte limit";
      return false;
    }
    out.emplace(key, std::move(text));
  }
  return true;
}

} // namespace runwarden::proxy
