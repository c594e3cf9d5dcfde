#pragma once
// Hot reload and out-of-band controls (DESIGN §7, issue 6): SIGHUP or a change to the
// config, catalogue or runbook files reloads the policy (validated first, then swapped
// atomically; an invalid change keeps the last good policy, logs every file:line:col error,
// is counted and recorded). The kill-switch file is polled: its presence means paused.
// SIGUSR1 pauses and SIGUSR2 returns to normal, for when the admin port is unreachable.

#include "proxy/proxy_context.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <memory>
#include <string>

namespace runwarden::proxy {

class Reloader : public std::enable_shared_from_this<Reloader> {
public:
  /// `poll` is the kill-switch period; policy files are checked every fourth poll.
  Reloader(boost::asio::io_context& ioc, std::shared_ptr<ProxyContext> ctx,
           std::chrono::milliseconds poll = std::chrono::milliseconds(250));

  /// Starts polling; with `signals`, also handles SIGHUP, SIGUSR1 and SIGUSR2.
  void start(bool signals);
  /// Cancels the timer and the signal handlers (before the io_context stops).
  void stop();

  /// Loads the config file again. Valid: swaps the policy and returns true. Invalid: keeps
  /// the last good policy, logs and records every error, returns false.
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
  unsigned ticks_ = 0;
  bool stopped_ = false;
};

/// Builds and starts the reloader for a running server (`runwarden serve`).
std::shared_ptr<Reloader> start_operations(boost::asio::io_context& ioc,
                                           std::shared_ptr<ProxyContext> ctx, bool signals);

} // namespace runwarden::proxy
