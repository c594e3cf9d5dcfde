#pragma once
// The proxy server: binds the explicit proxy and admin listeners, hands accepted agent
// connections to its I/O threads, and drains on request. Start-up errors throw; the data path
// does not.

#include "approval/operator_tokens.hpp"
#include "proxy/admin_router.hpp"
#include "proxy/proxy_context.hpp"

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <set>
#include <thread>
#include <vector>

namespace runwarden::proxy {

class ApprovalGate;

struct ServerOptions {
  std::shared_ptr<const config::Config> config;
  std::shared_ptr<audit::AuditLog> audit;
  std::shared_ptr<certs::Authority> authority; // null: CONNECT interception refused (503)
  std::shared_ptr<Gate> gate;                  // null: RefuseHolds
  /// 0: agent connections run on the caller's io_context, each on its own strand. N: the
  /// server owns N io_contexts, each run by exactly one thread, and deals agent connections
  /// out to them in turn, so a connection never changes thread and its handlers never wake
  /// another thread. Admin, approvals and drain stay on the caller's io_context.
  unsigned io_threads = 0;
};

class Server {
public:
  /// Builds the TLS contexts (throws std::runtime_error on a bad trust bundle).
  Server(boost::asio::io_context& ioc, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds listen.proxy and listen.admin (port 0 picks a free port) and starts accepting.
  /// Throws std::runtime_error when a listener cannot be bound.
  void start();

  boost::asio::ip::tcp::endpoint proxy_endpoint() const;
  boost::asio::ip::tcp::endpoint admin_endpoint() const;
  /// listen.transparent's first bound endpoint; a default endpoint when it is not configured.
  boost::asio::ip::tcp::endpoint transparent_endpoint() const;
  /// Every bound listen.transparent endpoint, in config order.
  std::vector<boost::asio::ip::tcp::endpoint> transparent_endpoints() const;

  /// Routes served on the admin listener; add routes before start().
  AdminRouter& admin_router() { return router_; }
  const std::shared_ptr<ProxyContext>& context() const { return ctx_; }
  /// The operator tokens every admin credential check reads (approvals routes, mode, kill):
  /// a handle, so the reloader's replace_with() reaches them all (reload.hpp).
  const approval::OperatorTokens& operator_tokens() const { return tokens_; }

  /// Stops accepting, lets in-flight exchanges finish, and calls done once none remain or
  /// the grace period has passed (the caller then stops the io_context, cancelling the rest).
  void drain(std::chrono::milliseconds grace, std::function<void()> done);

  /// Stops the I/O threads (cancelling whatever they still run) and joins them; idempotent,
  /// also done by the destructor. Call after drain's done, before syncing the audit log.
  void stop_io_threads();

private:
  struct Listener;
  void accept(const std::shared_ptr<Listener>& listener);
  /// Moves an accepted connection's descriptor onto the next I/O thread's context
  /// (round-robin); a closed socket when that fails (logged).
  boost::asio::ip::tcp::socket adopt_on_io_thread(boost::asio::ip::tcp::socket socket);
  void poll_drain(std::chrono::steady_clock::time_point deadline, std::function<void()> done);
  bool drain_aborting_ = false; // the grace ran out: in-flight exchanges were told to end

  using WorkGuard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;

  boost::asio::io_context& ioc_;
  /// Declared first after ioc_ so that they are destroyed last: anything else the server
  /// owns (the gate's pending holds, the context) may still keep sessions and their sockets
  /// alive, and those must go while their io_context exists.
  std::vector<std::unique_ptr<boost::asio::io_context>> io_;
  std::vector<WorkGuard> io_guards_;
  std::vector<std::thread> io_threads_;
  std::atomic<std::size_t> next_io_{0}; // round-robin over io_
  std::shared_ptr<ProxyContext> ctx_;
  AdminRouter router_;
  std::shared_ptr<Listener> proxy_;
  std::shared_ptr<Listener> admin_;
  std::vector<std::shared_ptr<Listener>> transparent_; // one per listen.transparent endpoint
  boost::asio::ip::tcp::endpoint proxy_endpoint_;
  boost::asio::ip::tcp::endpoint admin_endpoint_;
  boost::asio::steady_timer drain_timer_;
  std::shared_ptr<ApprovalGate> approvals_; // null when holds are refused
  approval::OperatorTokens tokens_;
};

/// Ports a CONNECT may name: those of the catalogue's matchers, 443 for an https or
/// any-scheme matcher without ports. Fixed at start-up (ProxyContext::connect_ports).
std::set<std::uint16_t> catalogue_connect_ports(const policy::Catalogue* catalogue);

/// GET /healthz, /readyz and /v1/status.
void add_builtin_admin_routes(AdminRouter& router, std::shared_ptr<ProxyContext> ctx);

/// Serves one admin connection (admin_session.cpp).
void start_admin_session(const AdminRouter& router, std::shared_ptr<ProxyContext> ctx,
                         boost::asio::ip::tcp::socket socket);

} // namespace runwarden::proxy
