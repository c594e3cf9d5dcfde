#include "approval/crypto.hpp"

#include "policy/hex.hpp"

#include <limits>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

namespace runwarden::approval {

Sha256 sha256(std::string_view data) {
  Sha256 out{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

std::string sha256_hex(std::string_view data) {
  const Sha256 d = sha256(data);
  return to_hex(d.data(), d.size());
}

Sha256 hmac_sha256(std::string_view key, std::string_view data) {
  Sha256 out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len);
  return out;
}

std::string to_hex(const unsigned char* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 0x0f]);
  }
  return out;
}

namespace {
using policy::hex_value;
} // namespace

std::optional<Sha256> sha256_from_hex(std::string_view hex) {
  Sha256 out{};
  if (hex.size() != out.size() * 2) {
    return std::nullopt;
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return std::nullopt;
    }
    out[i] = static_cast<unsigned char>((hi << 4) | lo);
  }
  return out;
}

bool digest_equal(const Sha256& a, const Sha256& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool random_bytes(unsigned char* out, std::size_t size) {
  return size <= static_cast<std::size_t>(std::numeric_limits<int>::max()) &&
         RAND_bytes(out, static_cast<int>(size)) == 1;
}

std::string random_id(std::string_view prefix) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return {};
  }
  std::string out(prefix);
  out += to_hex(bytes, sizeof bytes);
  return out;
}

} // namespace runwarden::approval
