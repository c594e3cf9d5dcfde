#pragma once
// One runbook file -> policy::Runbook (DESIGN §3), checked against the catalogue.

#include "config/diagnostics.hpp"
#include "policy/model.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace runwarden::config {

/// Loads one runbook, reporting every problem into `diag`. Action names are checked
/// against `catalogue`; when it is null (the catalogue itself failed to load, which is
/// already reported) they are not, to avoid one misleading error per listed action.
/// nullptr when nothing usable was loaded.
/// The runbook's sha256 is over the file's exact bytes: its version in audit records.
std::shared_ptr<policy::Runbook> load_runbook(const std::filesystem::path& file,
                                              std::string display,
                                              const policy::Catalogue* catalogue, Diagnostics& diag,
                                              const policy::SourceMark* from = nullptr,
                                              std::string_view from_path = {});

/// Lower-case hex SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

} // namespace runwarden::config
