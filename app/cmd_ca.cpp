// `runwarden ca init DIR`: the CA that signs the leaves runwarden presents to agents.

#include "app/commands.hpp"
#include "certs/authority.hpp"

#include <filesystem>
#include <iostream>
#include <string>

namespace runwarden::app {

void add_ca_commands(CLI::App& root, Runner& run) {
  CLI::App* ca = root.add_subcommand("ca", "Manage the interception CA");
  ca->require_subcommand(1);

  struct InitArgs {
    std::string dir;
    std::string name = "runwarden dev CA";
    int days = 3650;
  };
  auto args = std::make_shared<InitArgs>();
  CLI::App* init = ca->add_subcommand(
      "init", "Create DIR/ca.pem and DIR/ca.key (0600): an ECDSA P-256 CA; never overwrites.\n"
              "Agents must trust ca.pem; tls.ca_cert / tls.ca_key point at these files.");
  init->add_option("DIR", args->dir, "Directory for ca.pem and ca.key (created if missing)")
      ->required();
  init->add_option("--name", args->name, "Common name of the CA")->capture_default_str();
  init->add_option("--days", args->days, "Validity in days")
      ->capture_default_str()
      ->check(CLI::Range(1, 36500));
  init->callback([&run, args] {
    run = [args] {
      const std::filesystem::path dir{args->dir};
      certs::Authority::create(dir, args->name, args->days);
      std::cout << "created " << (dir / "ca.pem").string() << " and " << (dir / "ca.key").string()
                << " (mode 0600), valid " << args->days << " days\n";
      return 0;
    };
  });
}

} // namespace runwarden::app
