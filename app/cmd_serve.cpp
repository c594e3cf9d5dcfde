// `runwarden serve -c FILE`: the proxy and admin listeners, until SIGTERM/SIGINT drains them.

#include "app/commands.hpp"
#include "approval/operator_tokens.hpp"
#include "audit/audit_log.hpp"
#include "certs/authority.hpp"
#include "config/config.hpp"
#include "proxy/admin_ops.hpp"
#include "proxy/log.hpp"
#include "proxy/reload.hpp"
#include "proxy/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace runwarden::app {
namespace {

constexpr std::chrono::seconds kDrainGrace{5};

audit::Options audit_options(const config::Config& cfg) {
  audit::Options o;
  o.path = cfg.audit.path.string();
  o.durability = cfg.audit.fsync_always ? audit::Durability::synced : audit::Durability::written;
  o.fsync_interval = cfg.audit.fsync_interval;
  o.body_bytes = cfg.audit.body_bytes;
  o.rotate_bytes = cfg.audit.rotate_bytes;
  if (!cfg.audit.signing_key.empty()) {
    std::ifstream in(cfg.audit.signing_key);
    if (!in) {
      throw std::runtime_error("audit.signing_key: cannot read " + cfg.audit.signing_key.string());
    }
    std::ostringstream pem;
    pem << in.rdbuf();
    o.signing_key_pem = pem.str();
  }
  o.checkpoint_records = cfg.audit.checkpoint_records;
  o.checkpoint_interval = cfg.audit.checkpoint_interval;
  o.redact_headers = cfg.redaction.headers;
  o.redact_json_keys = cfg.redaction.json_keys;
  o.redact_patterns = cfg.redaction.patterns;
  return o;
}

int serve(const std::string& file, unsigned threads_opt, const std::string& level_text) {
  proxy::LogLevel level = proxy::LogLevel::info;
  if (!proxy::parse_log_level(level_text, level)) {
    std::cerr << "runwarden serve: --log-level must be debug, info, warn or error\n";
    return 2;
  }
  proxy::set_log_level(level);
  std::shared_ptr<const config::Config> cfg;
  try {
    cfg = config::load_config(file);
  } catch (const config::ConfigError& e) {
    for (const auto& line : e.errors()) {
      std::cerr << line << "\n";
    }
    return 1;
  }
  proxy::log_runbook_warnings(*cfg); // what `runwarden check` warns about, in the serve log
  std::shared_ptr<audit::AuditLog> audit_log = audit::AuditLog::open(audit_options(*cfg));
  std::shared_ptr<certs::Authority> authority =
      certs::Authority::load(cfg->tls.ca_cert, cfg->tls.ca_key);

  unsigned threads = threads_opt != 0 ? threads_opt : cfg->threads;
  if (threads == 0) {
    threads = std::max(1u, std::thread::hardware_concurrency());
  }
  // Agent connections run on `threads` io_contexts of their own (one thread each); this one,
  // run by the main thread, keeps the admin listener, approvals, signals and reloads.
  boost::asio::io_context ioc(1);
  proxy::ServerOptions options{cfg, audit_log, authority, nullptr};
  options.io_threads = threads;
  proxy::Server server(ioc, std::move(options));
  // A kill-switch file present at start-up pauses before the first connection is accepted:
  // the Reloader's poll, which keeps the mode current from then on, runs on this thread.
  if (std::error_code fs_ec;
      !cfg->kill_switch_file.empty() && std::filesystem::exists(cfg->kill_switch_file, fs_ec)) {
    proxy::apply_kill_switch(server.context(), true);
  }
  server.start();
  // Kill-switch file, policy and tokens file watch, SIGHUP reload, SIGUSR1 pause, SIGUSR2
  // normal.
  auto operations = proxy::start_operations(ioc, server.context(), true, server.operator_tokens());

  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) {
      return;
    }
    proxy::log_event(proxy::LogLevel::info, "signal", 0, {}, {{"signal", std::to_string(signo)}});
    operations->stop();
    server.drain(kDrainGrace, [&ioc] { ioc.stop(); });
  });

  ioc.run();
  server.stop_io_threads(); // drained, or past the grace period: cancels the rest
  // The last records' completions post to the I/O contexts: they run now, while those
  // still exist (the Server, which owns them, goes at the end of this scope).
  audit_log->close();
  audit_log->sync();
  proxy::log_event(proxy::LogLevel::info, "stopped", 0, {});
  return 0;
}

} // namespace

void add_serve_command(CLI::App& root, Runner& run) {
  struct Args {
    std::string config;
    unsigned threads = 0;
    std::string log_level = "info";
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = root.add_subcommand(
      "serve", "Run the proxy (listen.proxy) and admin (listen.admin) listeners.\n"
               "SIGTERM/SIGINT drain: stop accepting, finish in-flight exchanges, exit 0.\n"
               "SIGHUP reloads the policy, redaction rules and limits (docs/operations.md\n"
               "lists what only a restart applies); SIGUSR1 pauses, SIGUSR2 returns to normal.");
  cmd->add_option("-c,--config", args->config, "runwarden.yaml")->required();
  cmd->add_option("--threads", args->threads,
                  "I/O threads for agent connections, one io_context each (default: config "
                  "threads, else cores); admin and signals use one more");
  cmd->add_option("--log-level", args->log_level, "debug | info | warn | error")
      ->capture_default_str();
  cmd->callback([&run, args] {
    run = [args] { return serve(args->config, args->threads, args->log_level); };
  });
}

} // namespace runwarden::app
