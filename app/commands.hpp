#pragma once
// Each command family registers its subcommands on the root CLI11 app.
// One file per family: cmd_<family>.cpp.

#include <CLI/CLI.hpp>
#include <functional>

namespace runwarden::app {

/// A registered subcommand runs this after parsing; its return value is the exit code.
using Runner = std::function<int()>;

/// Adds subcommands to `root`; each sets `run` when it is the one selected.
void add_check_commands(CLI::App& root, Runner& run);    // check, explain
void add_audit_commands(CLI::App& root, Runner& run);    // audit verify|query|blast-radius
void add_ca_commands(CLI::App& root, Runner& run);       // ca init
void add_serve_command(CLI::App& root, Runner& run);     // serve
void add_approval_commands(CLI::App& root, Runner& run); // approvals list|show|approve|deny
void add_ctl_commands(CLI::App& root, Runner& run);      // ctl mode|kill|status

} // namespace runwarden::app
