#pragma once
// Operator bearer tokens (DESIGN §5): a file of `NAME SHA256HEX [GROUP,GROUP...]` lines.
// The token itself is never stored; NAME is the approver identity recorded for whoever
// presents it, and the optional groups are what a runbook's `approvers` may name instead.

#include "approval/approvers.hpp"
#include "approval/crypto.hpp"

#include <memory>
#include <mutex>
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

/// A handle on one shared set of tokens: copies share it, so replace_with() on any copy (a
/// reload re-reading the file) reaches every holder at once, such as the admin
/// authenticator that was handed a copy at start-up. Thread-safe: a lookup works on the
/// snapshot it started with.
class OperatorTokens {
public:
  /// No tokens (every lookup fails) until replace_with().
  OperatorTokens();

  /// Reads and parses a tokens file; throws TokenFileError (start-up only).
  static OperatorTokens load(const std::string& path);
  /// Parses file contents; every malformed line is appended to `errors` as
  /// "file:line: message" ('#' comments and blank lines are fine). A name or a token hash
  /// listed twice is an error: one name must mean one set of groups.
  static OperatorTokens parse(std::string_view text, std::string_view file,
                              std::vector<std::string>& errors);

  /// The operator's name if `token` hashes to an entry. Compares the SHA-256 of the
  /// presented token with every entry in constant time, without early exit.
  std::optional<std::string> authenticate(std::string_view token) const;
  /// Same, from an Authorization header value ("Bearer <token>", scheme case-insensitive).
  std::optional<std::string> authenticate_header(std::string_view authorization) const;
  /// As authenticate(), with the operator's groups (for the approvers rule).
  std::optional<Principal> identify(std::string_view token) const;
  /// As authenticate_header(), with the operator's groups.
  std::optional<Principal> identify_header(std::string_view authorization) const;

  /// True when some operator is called `name_or_group` or is in a group of that name: a
  /// runbook's approvers entry that nobody matches can only let its holds time out.
  bool knows(std::string_view name_or_group) const;

  std::size_t size() const { return snapshot()->size(); }

  /// Every copy of this handle sees `fresh`'s tokens from now on (a revoked token stops
  /// working at once). `fresh` keeps sharing its own set, not this one.
  void replace_with(const OperatorTokens& fresh);

private:
  struct Entry {
    Principal who;
    Sha256 hash;
  };
  using Entries = std::vector<Entry>;
  struct Shared {
    mutable std::mutex mutex;
    std::shared_ptr<const Entries> entries;
  };
  std::shared_ptr<const Entries> snapshot() const;

  std::shared_ptr<Shared> shared_;
};

} // namespace runwarden::approval
