#pragma once
// One parsed YAML file and the strict, error-collecting accessors every loader
// uses: unknown keys (with a suggestion), duplicate keys, wrong types, and a
// faithful YAML -> JSON conversion (YAML 1.2 core schema: "5000" stays a string).

#include "config/diagnostics.hpp"
#include "policy/model.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <yaml-cpp/yaml.h>

namespace runwarden::config {

/// A value in a YAML file, where to point at it, and its dotted path.
/// Never copy-assign a Field: YAML::Node::operator= writes through to the document
/// (it does not rebind), which would corrupt the tree being walked. Copy-construct
/// or emplace instead.
struct Field {
  YAML::Node node;
  YAML::Mark mark;  // 0-based (yaml-cpp); the key's mark when the value is empty
  std::string path; // "allowed_actions.denied[2]"
};

/// The closest of `known` to `key`, or "" when nothing is close enough to suggest.
std::string closest_key(std::string_view key, std::initializer_list<std::string_view> known);
std::string closest_key(std::string_view key, const std::vector<std::string>& known);

/// "a.b" + "c" -> "a.b.c"; keys that are not plain identifiers are quoted: a["/amount"].
std::string child_path(const std::string& path, std::string_view key);

class YamlReader {
public:
  /// Reads and parses `file`, named `display` in messages. On failure reports
  /// why (at `from`/`from_path`, the key that named the file, when given) and returns nullopt.
  static std::optional<YamlReader> open(const std::filesystem::path& file, std::string display,
                                        Diagnostics& diag, const policy::SourceMark* from = nullptr,
                                        std::string_view from_path = {});

  const std::string& file() const { return file_; }
  const std::string& bytes() const { return bytes_; }
  Field root() const;
  Diagnostics& diag() const { return *diag_; }

  /// The 1-based source mark of a field, as recorded in the policy model.
  policy::SourceMark mark(const YAML::Mark& m) const;
  void error(const YAML::Mark& m, std::string_view path, std::string_view message) const;
  void error(const Field& f, std::string_view message) const { error(f.mark, f.path, message); }

  using KeyFn =
      std::function<void(const std::string& key, const YAML::Mark& key_mark, const Field& value)>;
  /// Visits each key of a map once. Unknown keys (when `known` is not empty) are
  /// reported with the closest known key. False (reported) when not a map.
  bool for_each(const Field& map, std::initializer_list<std::string_view> known,
                const KeyFn& fn) const;
  /// Like for_each, but any key is accepted (names chosen by the author).
  bool for_each_any(const Field& map, const KeyFn& fn) const;
  /// Reports "missing required key" when `key` is absent; returns presence.
  bool require(const Field& map, std::string_view key) const;

  /// Elements of a sequence, each with its path "path[i]". Reported when not a sequence.
  std::optional<std::vector<Field>> elements(const Field& seq) const;
  /// A scalar or a sequence of scalars, as one list (for `method: GET` or `method: [GET, HEAD]`).
  std::optional<std::vector<Field>> one_or_many(const Field& f) const;

  std::optional<nlohmann::json> json(const Field& f) const;
  std::optional<std::string> string(const Field& f) const;
  std::optional<std::int64_t> integer(const Field& f, std::int64_t min, std::int64_t max) const;
  std::optional<bool> boolean(const Field& f) const;
  std::optional<std::chrono::milliseconds> duration(const Field& f) const;
  std::optional<std::size_t> size(const Field& f) const;
  /// A path relative to this file's folder (absolute paths are kept).
  std::optional<std::filesystem::path> path(const Field& f) const;

private:
  YamlReader() = default;
  void check_duplicates(const YAML::Node& node, const std::string& path) const;
  std::optional<nlohmann::json> scalar_json(const Field& f) const;

  std::string file_;
  std::filesystem::path dir_;
  std::string bytes_;
  YAML::Node root_;
  Diagnostics* diag_ = nullptr;
};

} // namespace runwarden::config
