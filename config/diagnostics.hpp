#pragma once
// Collects every configuration error instead of stopping at the first, so an
// operator fixes a broken file in one pass rather than one error per run.

#include "policy/model.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace runwarden::config {

/// An ordered list of "file:line:col: path: message" lines.
class Diagnostics {
public:
  /// line and col are 1-based; path is the dotted key path ("limits.idle_timeout").
  void error(std::string_view file, int line, int col, std::string_view path,
             std::string_view message);
  void error(const policy::SourceMark& mark, std::string_view path, std::string_view message);

  bool empty() const { return errors_.empty(); }
  std::size_t size() const { return errors_.size(); }
  const std::vector<std::string>& errors() const { return errors_; }
  std::vector<std::string> take() { return std::move(errors_); }

private:
  std::vector<std::string> errors_;
};

} // namespace runwarden::config
