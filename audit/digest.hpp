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

} // namespace runwarden::audit
