#pragma once
// Names of rotated files: <stem>-<first seq>-<last seq>.jsonl beside the active <stem>.jsonl.
// The name records the range so that a verifier can tell a truncated file from a short one.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::audit {

struct RotatedName {
  std::string path;
  std::string stem;
  std::uint64_t first = 0;
  std::uint64_t last = 0;

  /// "audit.jsonl" -> "audit".
  static std::string stem_of(std::string_view filename);
  static std::string make(std::string_view stem, std::uint64_t first, std::uint64_t last);
  /// Parses a file name (no directory) of any stem.
  static std::optional<RotatedName> parse(std::string_view filename);
  /// Rotated files of `stem` in `dir`, ordered by first seq.
  static std::vector<RotatedName> list(const std::string& dir, std::string_view stem);
};

} // namespace runwarden::audit
