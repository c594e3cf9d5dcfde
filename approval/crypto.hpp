#pragma once
// Small OpenSSL wrappers shared by the approval module: digests, HMAC, random ids,
// constant-time comparison. Nothing here throws.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace runwarden::approval {

using Sha256 = std::array<unsigned char, 32>;

/// SHA-256 of arbitrary bytes (a body, a token, a canonical request line).
Sha256 sha256(std::string_view data);
/// Lower-case hex SHA-256: the form stored in token files, packets and grants.
std::string sha256_hex(std::string_view data);
/// HMAC-SHA256(key, data), the primitive behind Runwarden-Signature.
Sha256 hmac_sha256(std::string_view key, std::string_view data);

/// Lower-case hex of raw bytes.
std::string to_hex(const unsigned char* data, std::size_t size);
/// Exactly 2*N hex digits (either case) to bytes; nullopt on any other input.
std::optional<Sha256> sha256_from_hex(std::string_view hex);

/// Constant-time equality of two digests (CRYPTO_memcmp): no early exit on the first
/// differing byte, so a comparison leaks no prefix length.
bool digest_equal(const Sha256& a, const Sha256& b);

/// `prefix` + 128 random bits (RAND_bytes) in lower-case hex, e.g. "apr_3f9c...".
/// Returns an empty string if the CSPRNG fails: callers must refuse rather than
/// fall back to a guessable id.
std::string random_id(std::string_view prefix);

/// Fills `size` bytes from the CSPRNG (RAND_bytes); false if it failed (out is then
/// not to be used).
bool random_bytes(unsigned char* out, std::size_t size);

} // namespace runwarden::approval
