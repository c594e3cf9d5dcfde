// libFuzzer: the redactor must never crash, never keep a planted secret, and keep every
// excerpt within its limit whatever the body, content type or URL.

#include "audit/redactor.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {
const runwarden::audit::Redactor& redactor() {
  static const runwarden::audit::Redactor r;
  return r;
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::size_t limit = static_cast<std::size_t>(data[0]) * 4;
  static constexpr std::string_view kTypes[] = {
      "", "application/json", "application/x-www-form-urlencoded", "text/plain", "image/png"};
  const std::string_view type = kTypes[data[0] % 5];
  const auto& r = redactor();
  const auto body = r.redact_body(in, type, limit);
  if (body.text.size() > limit || body.sha256.size() != 64) {
    std::abort();
  }
  // The prefiltered body path (scan, bitmap JSON walk) redacts exactly as the reference.
  static const runwarden::audit::Redactor reference({},
                                                    runwarden::audit::Redactor::Scan::exhaustive);
  const auto slow = reference.redact_body(in, type, limit);
  if (slow.text != body.text || slow.binary != body.binary || slow.truncated != body.truncated) {
    std::abort();
  }
  // A secret planted in the middle of arbitrary text must not survive.
  const std::string secret = "AKIAFUZZCANARY000000";
  std::string planted(in.substr(0, size / 2));
  planted += ' ';
  planted += secret;
  planted += ' ';
  planted += in.substr(size / 2);
  if (r.redact_text(planted).find(secret) != std::string::npos) {
    std::abort();
  }
  (void)r.redact_url(in);
  (void)r.redact_header(in.substr(0, size / 3), in.substr(size / 3));
  return 0;
}
