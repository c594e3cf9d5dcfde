#pragma once
// SHA-256 helpers shared by the redactor, the writer and the verifier.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace runwarden::audit {

using Sha256 = std::array<std::uint8_t, 32>;

/// Raw SHA-256; the chain and markers are built on it.
Sha256 sha256(std::string_view data);
/// SHA-256 of the concatenation `first || second` without building it (the chain hash).
Sha256 sha256(std::string_view first, std::string_view second);
/// Lower-case hex of any byte string.
std::string to_hex(const std::uint8_t* data, std::size_t size);
/// Lower-case hex SHA-256, the form every hash takes in the log.
std::string sha256_hex(std::string_view data);
/// The same into `out`, reusing its capacity.
void sha256_hex(std::string_view data, std::string& out);
/// `[REDACTED:<first 8 hex of SHA-256(value)>]`: equal secrets correlate, none are readable.
std::string redaction_marker(std::string_view value);

/// The record side of a body that passes through in pieces (a relayed upload or response)
/// and is kept only up to a prefix for the excerpt. Nothing is hashed while the prefix holds
/// the whole body (the audit hashes it then, as any body); once the body outgrows it, the
/// prefix and every later piece are hashed as they pass, so the record's `body_sha256` is
/// that of every byte relayed rather than of the excerpt's source.
class StreamedBodyDigest {
public:
  StreamedBodyDigest() = default;
  ~StreamedBodyDigest();
  StreamedBodyDigest(const StreamedBodyDigest&) = delete;
  StreamedBodyDigest& operator=(const StreamedBodyDigest&) = delete;

  /// Appends what fits of the n bytes at data to `kept` (up to `keep` bytes in all) and
  /// hashes as above. `kept` must hold exactly the bytes added since reset(), up to `keep`.
  void add(std::string& kept, std::size_t keep, const char* data, std::size_t n);
  /// Lower-case hex SHA-256 of every byte added since reset(); empty while `kept` holds
  /// them all, or if the digest could not be computed (the audit then hashes the prefix).
  std::string hex() const;
  /// For the next body.
  void reset() { active_ = false; }

private:
  void* ctx_ = nullptr; // EVP_MD_CTX, made on the first body that outgrows its prefix
  bool active_ = false;
  bool failed_ = false;
};

} // namespace runwarden::audit
