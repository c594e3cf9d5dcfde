#include "approval/packet_redactor.hpp"

#include "approval/crypto.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace runwarden::approval {

namespace {
bool is_credential_header(std::string_view name) {
  static constexpr std::array<std::string_view, 7> names = {
      "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
      "api-key",       "x-auth-token"};
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::find(names.begin(), names.end(), lower) != names.end();
}
} // namespace

HeaderList HeaderOnlyRedactor::redact_headers(const HeaderList& headers) const {
  HeaderList out;
  out.reserve(headers.size());
  for (const auto& [name, value] : headers) {
    if (is_credential_header(name)) {
      out.emplace_back(name, "[REDACTED:" + sha256_hex(value).substr(0, 8) + "]");
    } else {
      out.emplace_back(name, value);
    }
  }
  return out;
}

std::string HeaderOnlyRedactor::redact_body(std::string_view body,
                                            std::string_view /*content_type*/) const {
  if (body.empty()) {
    return {};
  }
  return "[WITHHELD: no body redactor]";
}

std::string HeaderOnlyRedactor::redact_url(std::string_view url) const {
  const auto query = url.find('?');
  if (query == std::string_view::npos) {
    return std::string(url);
  }
  return std::string(url.substr(0, query)) + "?[WITHHELD: no URL redactor]";
}

} // namespace runwarden::approval
