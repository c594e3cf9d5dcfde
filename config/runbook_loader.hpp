#pragma once
// One runbook file -> policy::Runbook (DESIGN §3), checked against the catalogue.

#include "config/diagnostics.hpp"
#include "policy/model.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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

/// Warnings for `runwarden check`: things that load but may not be what the author meant.
/// A `diagnostics` action not also listed under allowed_actions counts as read_only, so
/// when one of its matchers can match a method other than GET, HEAD or OPTIONS (or an MCP
/// tools/call) it passes, even in read_only mode, a call that may have side effects. One
/// "file:line:col: diagnostics: warning: ..." line per such action, in name order.
std::vector<std::string> runbook_warnings(const policy::Runbook& rb,
                                          const policy::Catalogue& catalogue);

/// Lower-case hex SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

} // namespace runwarden::config
