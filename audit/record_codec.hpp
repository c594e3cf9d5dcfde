#pragma once
// The canonical line format and the chain hash (docs/audit.md "Canonical form").
// A sealed line is `U' + ,"hash":"<64 hex>"}` + '\n', where U is the record without its
// hash member (ending in ,"prev":"<64 hex>"}) and U' is U without its closing brace.
// hash = hex SHA-256(prev_hex || U). The verifier recomputes from the raw bytes, so no
// re-serialization is ever needed.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace runwarden::audit {

/// prev of the first record of a log.
inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Pieces of a line cut at its hash member; views into the line.
struct UnsealedLine {
  std::string unsealed; // U: the record without its hash member
  std::string hash;     // the stored hash (64 hex)
};

class RecordCodec {
public:
  /// Builds U = {"v":1,"seq":N,"ts":"...",<members>,"prev":"<prev>"} and the sealed line.
  /// `members` is a comma-separated list of JSON members (no braces), pure ASCII.
  static std::string seal(std::uint64_t seq, std::string_view ts, std::string_view members,
                          std::string_view prev, std::string& hash_out);
  /// The same line appended to `out` (the writer's open batch), built in place: U is
  /// written once, hashed where it lies, and its closing brace becomes the hash member. No
  /// allocation when `out` has the room; `hash_out` receives the 64 hex digits.
  static void seal_into(std::string& out, std::uint64_t seq, std::string_view ts,
                        std::string_view members, std::string_view prev,
                        std::array<char, 64>& hash_out);
  /// The same line built around `members` where they lie: the head is written into the
  /// `headroom` bytes before them and the rest into the `tailroom` bytes after, so a
  /// record built in a writable buffer is sealed without being copied. Returns the line (a
  /// view into that buffer), or an empty view, writing nothing, when the room is too small.
  static std::string_view seal_in_place(char* members, std::size_t size, std::size_t headroom,
                                        std::size_t tailroom, std::uint64_t seq,
                                        std::string_view ts, std::string_view prev,
                                        std::array<char, 64>& hash_out);
  /// Splits a line (without '\n') at its hash member; nullopt if the suffix is malformed.
  static std::optional<UnsealedLine> unseal(std::string_view line);
  /// hash of U with the given prev.
  static std::string chain_hash(std::string_view prev, std::string_view unsealed);
  /// Now, as RFC 3339 UTC with microseconds.
  static std::string now_rfc3339();
  /// The same into `buf` (no allocation on the record path); returns the 27 bytes written.
  static std::string_view now_rfc3339(std::array<char, 32>& buf);
  /// RFC 3339 (Z or ±hh:mm, optional fraction) -> microseconds since the epoch.
  static std::optional<std::int64_t> parse_rfc3339(std::string_view text);
};

} // namespace runwarden::audit
