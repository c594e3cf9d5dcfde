#include "audit/digest.hpp"

#include <openssl/sha.h>

namespace runwarden::audit {

Sha256 sha256(std::string_view data) {
  Sha256 out{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data());
  return out;
}

std::string to_hex(const std::uint8_t* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    out[2 * i] = digits[data[i] >> 4];
    out[2 * i + 1] = digits[data[i] & 0x0f];
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  const Sha256 digest = sha256(data);
  return to_hex(digest.data(), digest.size());
}

std::string redaction_marker(std::string_view value) {
  const Sha256 digest = sha256(value);
  std::string out = "[REDACTED:";
  out += to_hex(digest.data(), 4);
  out += ']';
  return out;
}

} // namespace runwarden::audit
