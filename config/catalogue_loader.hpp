#pragma once
// actions.yaml -> policy::Catalogue (DESIGN §3): what each action looks like on the wire.

#include "config/diagnostics.hpp"
#include "config/yaml_reader.hpp"
#include "policy/model.hpp"

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::config {

/// Loads the catalogue, reporting every problem into `diag`. Returns nullptr only
/// when the file cannot be read or parsed at all; otherwise the actions that
/// loaded (callers check diag before using it).
std::shared_ptr<policy::Catalogue> load_catalogue(const std::filesystem::path& file,
                                                  std::string display, Diagnostics& diag,
                                                  const policy::SourceMark* from = nullptr,
                                                  std::string_view from_path = {});

/// A predicate map ({lte: 5000, exists: true}) or a scalar shorthand for eq.
/// `text_values`: the tested value is a string (query parameters, headers).
std::optional<std::vector<policy::Predicate>> parse_predicates(const YamlReader& r, const Field& f,
                                                               bool text_values);

/// Compiles an RE2 pattern, reporting a syntax error at f. nullptr on error.
std::shared_ptr<const re2::RE2> compile_regex(const YamlReader& r, const Field& f,
                                              const std::string& pattern);

} // namespace runwarden::config
