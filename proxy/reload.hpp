#pragma once
// Hot reload and out-of-band controls (DESIGN §7, issue 6): SIGHUP or a change to the
// config, catalogue or runbook files reloads the policy (validated first, then swapped
// atomically; an invalid change keeps the last good policy, logs every file:line:col error,
// is counted and recorded). The kill-switch file is polled: its presence means paused.
// SIGUSR1 pauses and SIGUSR2 returns to normal, for when the admin port is unreachable.

#include "approval/operator_tokens.hpp"
#include "proxy/proxy_context.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace runwarden::proxy {

/// A setting a reload changed that the running process read once at start-up.
struct RestartRequired {
  std::string setting; // "limits.max_connections"
  std::string why;
};

/// What differs between the running config and a freshly loaded one that only a restart
/// applies, one entry per setting (docs/operations.md lists them). The policy (catalogue,
/// runbooks, active and selectable runbooks), approvals.operator_tokens_file, redaction.*
/// and limits.* are live (Reloader::reload applies them); tls.passthrough is not judged here.
std::vector<RestartRequired> restart_required(const config::Config& running,
                                              const config::Config& fresh);

/// Logs (warn, `runbook_warning`) what `runwarden check` warns about in `cfg`'s runbooks
/// (config::runbook_warnings), so that a policy that loads but may not be what its author
/// meant is visible in the serve log at start-up and after each reload. Returns the count.
std::size_t log_runbook_warnings(const config::Config& cfg);

class Reloader : public std::enable_shared_from_this<Reloader> {
public:
  /// `poll` is the kill-switch period; policy files are checked every fourth poll.
  Reloader(boost::asio::io_context& ioc, std::shared_ptr<ProxyContext> ctx,
           std::chrono::milliseconds poll = std::chrono::milliseconds(250));

  /// Starts polling; with `signals`, also handles SIGHUP, SIGUSR1 and SIGUSR2.
  void start(bool signals);
  /// Cancels the timer and the signal handlers (before the io_context stops).
  void stop();

  /// The operator tokens every admin credential check shares (Server::operator_tokens()):
  /// each reload re-reads approvals.operator_tokens_file into it, and the file is watched
  /// like the policy files. Call before start().
  void reload_operator_tokens(approval::OperatorTokens tokens);

  /// Loads the config file (and the operator tokens file) again. Valid: swaps the policy
  /// (limits.* with it) and the tokens, gives the audit log and the approval gate changed
  /// redaction rules (records and packets built from then on use them), warns once per
  /// changed start-up-only setting (reload_restart_required) and returns true; the
  /// `reloaded` log line and the `reload` record say whether redaction and limits changed
  /// ("applied") or not ("unchanged"). Invalid, or redaction rules that do not build: keeps
  /// the last good policy, tokens and rules, logs and records every error, returns false.
  bool reload(const std::string& via);

private:
  std::string fingerprint(const config::Config& cfg) const;
  void schedule();
  void poll();
  void wait_signal();

  boost::asio::io_context& ioc_;
  std::shared_ptr<ProxyContext> ctx_;
  std::chrono::milliseconds poll_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_; // timer and signals
  boost::asio::steady_timer timer_;
  boost::asio::signal_set signals_;
  std::string seen_;
  std::optional<approval::OperatorTokens> tokens_;
  unsigned ticks_ = 0;
  bool stopped_ = false;
};

/// Builds and starts the reloader for a running server (`runwarden serve`).
std::shared_ptr<Reloader>
start_operations(boost::asio::io_context& ioc, std::shared_ptr<ProxyContext> ctx, bool signals,
                 std::optional<approval::OperatorTokens> tokens = std::nullopt);

} // namespace runwarden::proxy
