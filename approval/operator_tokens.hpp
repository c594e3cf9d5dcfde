#pragma once
// Operator bearer tokens (DESIGN §5): a file of `NAME SHA256HEX` lines. The token itself
// is never stored; NAME is the approver identity recorded for whoever presents it.

#include "approval/crypto.hpp"

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::approval {

/// Start-up error listing every bad line as "file:line: message".
class TokenFileError : public std::runtime_error {
public:
  explicit TokenFileError(std::vector<std::string> errors);
  const std::vector<std::string>& errors() const { return errors_; }

private:
  std::vector<std::string> errors_;
};

class OperatorTokens {
public:
  /// Reads and parses a tokens file; throws TokenFileError (start-up only).
  static OperatorTokens load(const std::string& path);
  /// Parses file contents; every malformed line is appended to `errors` as
  /// "file:line: message" ('#' comments and blank lines are fine).
  static OperatorTokens parse(std::string_view text, std::string_view file,
                              std::vector<std::string>& errors);

  /// The operator's name if `token` hashes to an entry. Compares the SHA-256 of the
  /// presented token with every entry in constant time, without early exit.
  std::optional<std::string> authenticate(std::string_view token) const;
  /// Same, from an Authorization header value ("Bearer <token>", scheme case-insensitive).
  std::optional<std::string> authenticate_header(std::string_view authorization) const;

  std::size_t size() const { return entries_.size(); }

private:
  struct Entry {
    std::string name;
    Sha256 hash;
  };
  std::vector<Entry> entries_;
};

} // namespace runwarden::approval
