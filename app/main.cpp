// runwarden: a sidecar proxy that keeps AI agents on their runbooks.
// Exceptions are for start-up only: caught here, printed, non-zero exit.

#include "app/commands.hpp"

#include <exception>
#include <iostream>

int main(int argc, char** argv) {
  CLI::App root{"runwarden: a sidecar proxy that keeps AI agents on their runbooks.\n"
                "It judges every outbound tool call against the active runbook, holds what needs\n"
                "a human, and writes a redacted, hash-chained audit log.",
                "runwarden"};
  root.require_subcommand(1);
  root.set_version_flag("--version", "runwarden 0.1.0");
  runwarden::app::Runner run;
  // Command families (one per file). Keep in the order `runwarden --help` shows them.
  // BEGIN COMMANDS
  runwarden::app::add_check_commands(root, run);
  runwarden::app::add_ca_commands(root, run);
  runwarden::app::add_audit_commands(root, run);
  runwarden::app::add_serve_command(root, run);
  runwarden::app::add_approval_commands(root, run);
  runwarden::app::add_ctl_commands(root, run);
  // END COMMANDS
  try {
    root.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error (a missing argument, an unknown
    // option) exits 2, as the commands' own usage errors do, not CLI11's 105, 106, ...
    return root.exit(e) == 0 ? 0 : 2;
  }
  try {
    return run ? run() : 2;
  } catch (const std::exception& e) {
    std::cerr << "runwarden: " << e.what() << "\n";
    return 1;
  }
}
