#pragma once
// ASCII-only text helpers for HTTP tokens (header names, methods, media types), shared by
// every module: HTTP compares these case-insensitively in ASCII, so no locale and no libc
// call per byte. policy/ is the lowest module, so everyone can include it.

#include <string_view>

namespace runwarden::policy {

constexpr char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

/// Equal ignoring ASCII case; bytes outside A-Z must match exactly.
constexpr bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) {
      return false;
    }
  }
  return true;
}

/// Without the optional whitespace (SP and HTAB, RFC 9110 §5.6.3) at either end.
constexpr std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

static_assert(ascii_lower('A') == 'a' && ascii_lower('z') == 'z' && ascii_lower('[') == '[');
static_assert(iequals("Content-Type", "content-TYPE") && !iequals("a", "b") &&
              !iequals("ab", "a") && !iequals("\xC0", "\xE0"));
static_assert(trim_ows(" \tx y\t ") == "x y" && trim_ows("\r").size() == 1);

} // namespace runwarden::policy
